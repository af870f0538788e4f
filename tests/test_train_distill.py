"""train.distill's ``--init``: a new teacher's student starts from an earlier student's fine-tuned
backbone, and a student of another network or input size is refused by name (the distillation
itself needs the data sets)."""

import pytest
import torch

from joint_core.config import JointConfig
from joint_core.model import JointModel
from joint_core.weights_io import save_model
from train.distill import init_backbone, student_config

SHIPPED_DEFAULT = "joint_core/weights/default/config.json"


@pytest.fixture(scope="module")
def earlier_student(tmp_path_factory):
    from conftest import REPO

    teacher = JointConfig.load(REPO / SHIPPED_DEFAULT)
    torch.manual_seed(3)
    model = JointModel(student_config(teacher, "efficientnet_lite0", 96)).eval()
    folder = tmp_path_factory.mktemp("fast-earlier")
    save_model(model, folder)
    return folder, model, teacher


def test_init_takes_the_earlier_students_backbone_and_says_what_it_was(earlier_student):
    folder, model, teacher = earlier_student
    state, what = init_backbone(str(folder), "efficientnet_lite0", 96)
    want = model.technical.backbone.state_dict()
    assert set(state) == set(want)
    assert all(torch.equal(state[k].float(), want[k].float()) for k in want)
    assert what == f"joint's fast model: efficientnet_lite0 at 96 px distilled from {teacher.name}"
    fresh = JointModel(student_config(teacher, "efficientnet_lite0", 96)).eval()
    fresh.technical.backbone.load_state_dict(state)          # loads strictly into a new student
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(fresh.technical.backbone(x), model.technical.backbone(x), atol=1e-6)


@pytest.mark.parametrize("backbone, size", [("efficientnet_lite0", 288), ("mobilenetv2_100", 96)])
def test_init_refuses_another_network_or_size_by_name(earlier_student, backbone, size):
    folder, _, _ = earlier_student
    with pytest.raises(SystemExit, match=rf"--init .*efficientnet_lite0 at 96 px, not the --backbone {backbone} "
                                         rf"at --size {size}"):
        init_backbone(str(folder), backbone, size)

"""Best-of-N with a real Stable Diffusion model: generate N candidates per prompt, keep the most
natural K, save them with their scores, and (optionally) regenerate the winner at more steps from
its seed.

    pip install 'joint-naturalness[diffusers]'
    python examples/best_of_n_stable_diffusion.py "a lighthouse on a cliff at dusk" --n 8 --k 2
    python examples/best_of_n_stable_diffusion.py "a red fox" --final-steps 50   # polish the winner
    python examples/best_of_n_stable_diffusion.py "a red fox" --offline-demo     # no download

The model is downloaded from the Hugging Face Hub on first use (about 2 GB for SD 1.5 in fp16);
any text-to-image model id works (``--model stabilityai/stable-diffusion-xl-base-1.0``). The
naturalness scorer is the default model (see the README); ``--scorer`` names another.
``--offline-demo`` runs the same code on a random-weight pipeline built from configs (its images
are noise), to try the hook without a download.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def load_pipeline(args, device: torch.device):
    if args.offline_demo:
        from diffusers_hook import testing

        print("offline demo: a random-weight Stable Diffusion pipeline (its images are noise)")
        return testing.sd_pipeline("tiny", device=device)
    from diffusers import AutoPipelineForText2Image

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(args.model, torch_dtype=dtype)
    except (OSError, ValueError, EnvironmentError) as e:   # no network, not cached, gated, wrong id
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.exit(f"could not load the diffusion model {args.model!r}: {first}\n"
                 "It is downloaded from the Hugging Face Hub on first use, which needs internet access "
                 "(and, for gated models, `huggingface-cli login`). Check the id, connect, or run with "
                 "--offline-demo to try the hook on a random-weight pipeline.")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt", nargs="+", help="one or more prompts")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"diffusers model id or folder (default {DEFAULT_MODEL})")
    ap.add_argument("--scorer", default=None, help="naturalness model folder / hub id (default: the default model)")
    ap.add_argument("--n", type=int, default=4, help="candidates per prompt")
    ap.add_argument("--k", type=int, default=1, help="images kept per prompt")
    ap.add_argument("--by", default="naturalness", choices=["naturalness", "technical", "rationality"])
    ap.add_argument("--threshold", type=float, default=None, help="drop candidates scoring below this (1-5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=25, help="denoising steps for the candidates")
    ap.add_argument("--final-steps", type=int, default=None, help="regenerate each winner with this many steps")
    ap.add_argument("--batch-size", type=int, default=None, help="candidates per prompt per pipeline call")
    ap.add_argument("--device", default=None, help="cuda / mps / cpu (default: the best available)")
    ap.add_argument("--out", default="best_of_n_out", help="folder for the kept images")
    ap.add_argument("--offline-demo", action="store_true", help="random-weight pipeline, no download")
    args = ap.parse_args(argv)

    from diffusers_hook import best_of_n
    from joint_core import CheckpointError, NaturalnessScorer, NoModelError, pick_device

    device = pick_device(args.device)
    try:
        scorer = NaturalnessScorer.from_pretrained(args.scorer, device=device)
    except NoModelError as e:
        if not args.offline_demo:
            sys.exit(f"no naturalness model: {e}")
        print("offline demo: no naturalness model installed, using random scorer weights (scores mean nothing)")
        scorer = NaturalnessScorer.from_config("tiny-test", device=device)
    except CheckpointError as e:
        sys.exit(f"cannot load the naturalness model: {e}")
    pipe = load_pipeline(args, device)
    size = {"height": 32, "width": 32} if args.offline_demo else {}
    steps = 2 if args.offline_demo else args.steps

    out = best_of_n(pipe, args.prompt, n=args.n, k=args.k, by=args.by, threshold=args.threshold, seed=args.seed,
                    scorer=scorer, batch_size=args.batch_size, num_inference_steps=steps, **size)

    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\n{len(out.images)} of {len(out.all_scores)} candidates kept (ranked by {args.by})")
    print(f"{'prompt':>6} {'cand':>5} {'seed':>8} {'technical':>10} {'rationality':>12} {'naturalness':>12}  file")
    for rank, (img, p, i, seed) in enumerate(zip(out.images, out.prompt_indices, out.indices, out.seeds)):
        rec = out.scores.to_records()[rank]
        name = folder / f"p{p}_seed{seed}_{args.by[:3]}{rec[args.by]:.2f}.png"
        img.save(name)
        print(f"{p:>6} {i - p * args.n:>5} {seed:>8} {rec['technical']:>10.3f} {rec['rationality']:>12.3f} "
              f"{rec['naturalness']:>12.3f}  {name}")
    if out.nsfw_content_detected and any(out.nsfw_content_detected):
        print("note: the pipeline's safety checker flagged some kept images (they are black)")

    if args.final_steps and not args.offline_demo:
        for p, seed in zip(out.prompt_indices, out.seeds):
            # the same seed gives the same starting noise: the winner, refined with more steps
            image = pipe(args.prompt[p], generator=torch.Generator("cpu").manual_seed(seed),
                         num_inference_steps=args.final_steps).images[0]
            name = folder / f"p{p}_seed{seed}_final{args.final_steps}.png"
            image.save(name)
            print(f"regenerated prompt {p} seed {seed} with {args.final_steps} steps -> {name}")


if __name__ == "__main__":
    main()

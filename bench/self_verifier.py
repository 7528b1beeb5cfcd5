"""Is the model a verifier of its own first windows? Best of N candidates by the model's own denoising error.

    python bench/self_verifier.py CKPT --prompts P.txt --candidates 4          # 4 first windows a prompt
    python bench/self_verifier.py CKPT --prompts P.txt --levels 0.5,0.7 --draws 4 --out rows.jsonl
    python bench/self_verifier.py CKPT --prompts P.txt --score-seed 1          # the same candidates, other noises

From text the first window is where long videos go wrong (docs/results/LONG_VIDEO.md), and a search over
candidates (inference-time scaling: Ma et al. 2025) needs a verifier. This bench asks whether the model can be
its own: each prompt's first window is made `--candidates` times (candidate c of prompt i from seed + 1000 c + i, so
candidate c is the first window of the long-video bench's `--seed 1000c` videos), each is scored by the drift score
(sora/eval/drift.py: the built-in dataset's rules, which no sampler may use), by five numbers the model gives and
one it needs no model for:

  error      its denoising error on the candidate under its prompt (sora/diffusion/verifier.py, what
             long.candidates ranks by): the mean over `--levels` x `--draws` of |x0 - x0_hat(x_t, t, prompt)|^2,
             one noise a (level, draw) shared by every candidate (common random numbers), so candidates of a
             prompt differ only in themselves; lower is better (a bound on the likelihood, as the training loss is);
  causal     its error on token frames k.. given frames ..k-1 clean, over every k >= 1 (a timestep per token frame,
             as Diffusion Forcing trains): each frame's error given the ones before it; lower is better;
  ratio      the same error with the empty prompt, less the error under the prompt: how much the prompt explains
             the candidate; higher is better;
  direction  the least error under the prompt with another direction, less the error under its own: the
             diffusion classifier of Li et al. 2023 over the four directions; higher is better;
  guided     the error of x0_hat under the sampler's text guidance (its cfg), the denoiser the candidates were
             drawn with, in place of the prompt alone; lower is better;
  medoid     the mean squared distance of the candidate's frames to the prompt's other candidates'
             (minimum Bayes risk: the candidate most like the rest, as self-consistency picks an answer); lower
             is better.

For each number: the AUC of passing against failing candidates (0.5: no signal), and the share of prompts whose
best-scoring candidate passes (best of N), beside the share of candidates that pass (one candidate, no search)
and of prompts with any passing candidate (a perfect verifier). Candidates are scored on their decoded frames, not
an mp4. One JSON line a score, then a markdown table.
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CANDIDATE_SEED_STRIDE = 1000  # candidate c's seeds: seed + 1000 c + i, the long-video bench's --seed 1000c
SCORES = ("error", "causal", "ratio", "direction", "guided", "medoid")
SCORE_SEED = 12345  # the noises of the model's numbers (--score-seed), shared by every candidate


# ---------------------------------------------------------------------------------------------------------------
# The model's numbers for a candidate
# ---------------------------------------------------------------------------------------------------------------


def causal_error(bundle, x0, prompts: list[str], levels: list[float], draws: int, seed: int):
    """b latents -> b: the model's mean error on token frames k.. given frames ..k-1 clean (a timestep per token
    frame, as Diffusion Forcing trains; Chen et al. 2024), over every k >= 1, level and draw: the error of each
    frame given the frames before it, where `denoising_error` noises them all at once."""
    import torch

    from sora.diffusion.objectives import broadcast_t

    cond = bundle.encode_text(prompts)
    pt = bundle.dit.patch_size[0]
    units = x0.shape[2] // pt  # token frames
    errors = []
    for k, t in enumerate(level for level in levels for _ in range(draws)):
        g = torch.Generator().manual_seed(seed + k)
        eps = torch.randn(x0.shape[1:], generator=g).to(x0)[None].expand_as(x0)  # b c t h w
        for first in range(1, units):
            tt = torch.zeros(x0.shape[0], x0.shape[2], device=x0.device)  # b T: the frames before clean
            tt[:, first * pt :] = t
            xt = bundle.objective.noised(x0, eps, tt)
            v = bundle.objective.velocity(bundle.dit, xt, tt, cond)
            x0_hat = xt - broadcast_t(tt, xt) * v
            errors.append((x0_hat - x0)[:, :, first * pt :].float().pow(2).flatten(1).mean(1))  # b
    return torch.stack(errors, 1).mean(1)  # b


def other_directions(prompt: str) -> list[str]:
    """The prompt with each other direction in place of its own (a moving-shapes caption)."""
    from sora.data.moving_shapes import DIRECTIONS, parse_caption

    words, (_, _, direction) = prompt.split(), parse_caption(prompt)
    at = words.index(direction)
    return [" ".join(words[:at] + [d] + words[at + 1 :]) for d in DIRECTIONS if d != direction]


def scores(bundle, latent, prompts: list[str], levels: list[float], draws: int, cfg: float,
           score_seed: int = SCORE_SEED) -> dict:
    """{score name: b values, higher = more likely to pass by the model's reckoning}; all but the medoid's."""
    import torch

    from sora.diffusion.guidance import guided_velocity
    from sora.diffusion.verifier import denoising_error

    def error(texts: list[str], scale: float | None = None) -> torch.Tensor:  # b
        cond = bundle.encode_text(texts)
        chain, scales = ([bundle.encode_text([""] * len(texts)), cond], [scale]) if scale is not None else ([cond], [])
        velocity_fn = guided_velocity(bundle.objective, bundle.dit, chain, scales)
        return denoising_error(bundle.objective, velocity_fn, latent, cond, score_seed, levels, draws)

    own, empty, guided = error(prompts), error([""] * len(prompts)), error(prompts, cfg)
    others = [[other_directions(p)[k] for p in prompts] for k in range(3)]
    other = torch.stack([error(o) for o in others]).amin(0)
    causal = causal_error(bundle, latent, prompts, levels, draws, seed=score_seed)
    return {"error": (-own).tolist(), "causal": (-causal).tolist(), "ratio": (empty - own).tolist(),
            "direction": (other - own).tolist(), "guided": (-guided).tolist()}


def medoid_scores(videos: list) -> list[float]:
    """n candidates' frames of one prompt (each c t h w) -> n: minus each one's mean squared distance to the others."""
    import torch

    x = torch.stack(videos).flatten(1).double()  # n (c t h w)
    dist = (x[:, None] - x[None]).pow(2).mean(-1)  # n n
    return (-dist.sum(1) / max(len(videos) - 1, 1)).tolist()


# ---------------------------------------------------------------------------------------------------------------
# Candidates, scored
# ---------------------------------------------------------------------------------------------------------------


def candidates(args) -> list[dict]:
    """One row a candidate: its prompt, candidate index, whether it passes the drift score, and the model's numbers."""
    import torch

    from bench.long_video import load
    from sora.eval.drift import drift_video
    from sora.inference.pipeline import check_prompts, sample_latent

    bundle, settings = load(args.ckpt, args.device, args.steps, args.cfg, sampler=args.sampler)
    one = settings.override(num_frames=settings.window)
    prompts = check_prompts(prompts_of(args), bundle.text)
    rows, videos = [], []
    for c in range(args.candidates):
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            seed = args.seed + CANDIDATE_SEED_STRIDE * c + start
            with torch.no_grad():
                latent = sample_latent(bundle, batch, seed, one)  # b c t h w
                video = bundle.vae.decode(latent).clamp(-1, 1)  # b 3 t h w
                numbers = scores(bundle, latent, batch, args.levels, args.draws, settings.cfg, args.score_seed)
            frames = ((video + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()  # b t h w 3
            for j, prompt in enumerate(batch):
                drift = drift_video(frames[j], prompt, one.window)
                rows.append({"prompt_index": start + j, "candidate": c, "prompt": prompt, "passed": drift["passed"],
                             "failed": drift["windows"][0]["failed"], **{k: v[j] for k, v in numbers.items()}})
                videos.append(video[j])
    by_prompt: dict[int, list[int]] = {}  # the medoid: each prompt's candidates against each other
    for k, r in enumerate(rows):
        by_prompt.setdefault(r["prompt_index"], []).append(k)
    for mine in by_prompt.values():
        for k, value in zip(mine, medoid_scores([videos[k] for k in mine])):
            rows[k]["medoid"] = value
    return rows


def auc(values: list[float], passed: list[bool]) -> float | None:
    """P(a passing candidate scores above a failing one), ties half (None without both kinds)."""
    pos = [v for v, p in zip(values, passed) if p]
    neg = [v for v, p in zip(values, passed) if not p]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return round(wins / (len(pos) * len(neg)), 3)


def summarize(rows: list[dict]) -> list[dict]:
    """One row a score: AUC, best of N; with the share of candidates passing and of prompts with any passing."""
    by_prompt: dict[int, list[dict]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_index"], []).append(r)
    n = len(by_prompt)
    one = sum(r["passed"] for r in rows) / len(rows)
    oracle = sum(any(r["passed"] for r in group) for group in by_prompt.values()) / n
    out = []
    for name in (s for s in SCORES if s in rows[0]):
        best = [max(group, key=lambda r: r[name]) for group in by_prompt.values()]
        out.append({"score": name, "candidates": len(rows) // n, "prompts": n,
                    "auc": auc([r[name] for r in rows], [r["passed"] for r in rows]),
                    "best_of_n_pass": round(sum(r["passed"] for r in best) / n, 3),
                    "one_candidate_pass": round(one, 3), "any_candidate_pass": round(oracle, 3)})
    return out


def prompts_of(args) -> list[str]:
    from sora.data.moving_shapes import parse_caption
    from sora.errors import SoraError

    path = Path(args.prompts)
    if not path.is_file():
        raise SoraError(f"--prompts {args.prompts!r} is not a file")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise SoraError(f"--prompts {args.prompts!r} has no prompt")
    bad = next((p for p in prompts if parse_caption(p) is None), None)
    if bad is not None:
        raise SoraError(f"--prompts: {bad!r} is not a moving-shapes caption (the drift score reads only those)")
    if len(prompts) > CANDIDATE_SEED_STRIDE:
        raise SoraError(f"--prompts: {len(prompts)} prompts; at most {CANDIDATE_SEED_STRIDE}, so no two candidates "
                        "share a seed")
    return prompts


def main(argv=None) -> None:
    from sora.errors import exit_on_user_error

    exit_on_user_error(run)(argv)


def run(argv=None) -> None:
    from sora.diffusion.samplers import SAMPLERS
    from sora.errors import ArgumentParser, SoraError

    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a task=dit checkpoint (.ckpt) or an export (.safetensors)")
    parser.add_argument("--prompts", required=True, help="moving-shapes captions, one a line")
    parser.add_argument("--candidates", type=int, default=4, help="first windows a prompt (4)")
    parser.add_argument("--levels", default="0.3,0.5,0.7", help="noise levels of the model's error, in (0, 1]")
    parser.add_argument("--draws", type=int, default=2, help="noises a level (2)")
    parser.add_argument("--score-seed", type=int, default=SCORE_SEED,
                        help=f"the seed of those noises ({SCORE_SEED}): another asks how much the numbers' own noise "
                             "moves best of N")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the checkpoint's)")
    parser.add_argument("--cfg", type=float, help="text guidance scale (default: the checkpoint's)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), help="the sampler (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="write every candidate's row here (JSON lines)")
    args = parser.parse_args(argv)
    if not Path(args.ckpt).is_file():
        raise SoraError(f"ckpt {args.ckpt!r} is not a file")
    for key, low in (("candidates", 1), ("draws", 1), ("steps", 1), ("batch_size", 1), ("cfg", 0)):
        value = getattr(args, key)
        if value is not None and value < low:
            raise SoraError(f"--{key.replace('_', '-')} must be >= {low}, got {value}")
    try:
        args.levels = [float(v) for v in args.levels.split(",")]
    except ValueError:
        raise SoraError(f"--levels must be noise levels in (0, 1], comma-separated, got {args.levels!r}") from None
    if not all(0 < v <= 1 for v in args.levels):
        raise SoraError(f"--levels must be noise levels in (0, 1], comma-separated, got {args.levels}")
    prompts_of(args)  # a bad prompt file fails before the model loads
    t0 = time.perf_counter()
    rows = candidates(args)
    seconds = round(time.perf_counter() - t0, 1)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = summarize(rows)
    for line in summary:
        print(json.dumps({**line, "seed": args.seed, "score_seed": args.score_seed, "levels": args.levels,
                          "draws": args.draws, "seconds": seconds}))
    print("| score | AUC | best of N passes | one candidate passes | any candidate passes |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for s in summary:
        print(f"| {s['score']} | {s['auc']} | {s['best_of_n_pass']} | {s['one_candidate_pass']} | "
              f"{s['any_candidate_pass']} |")


if __name__ == "__main__":
    main()

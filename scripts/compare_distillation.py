"""Does distillation beat plain training? Two comparisons, averaged over seeds, through real recipes.

1. A small student (digits_resnet width 8, ~0.06× the teacher's parameters)
   trained on labels alone vs the same student distilled from the trained
   teacher (digits_resnet width 32), same epochs, same optimiser.
2. The teacher pruned 50 % (structured, L1) then fine-tuned vs the same pruned
   model recovered by distillation from the unpruned teacher, same epochs.

Every arm is a real `compressctl apply` run; accuracies are the ONNX Runtime
accuracies of the final models on the validation split. The compared stages
keep their last epoch (``select_best: false``), so the validation split that
reports accuracy never picks the epoch. Run by hand:

    .venv/bin/python scripts/compare_distillation.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

INPUTS = [{"name": "x", "shape": ["batch", 1, 32, 32], "dtype": "float32"}]
TEACHER = {"factory": "compressctl.zoo:digits_resnet", "kwargs": {"width": 32}, "inputs": INPUTS}


def recipe(name: str, seed: int, model: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "name": name,
        "seed": seed,
        "model": model,
        "data": {"source": "digits", "image_size": 32, "batch_size": 64},
        "evaluate": {"metric": "accuracy"},
        "stages": stages,
        "report": {"providers": ["CPUExecutionProvider"], "batch_sizes": [32], "warmup": 2, "repeat": 5},
    }


def final_accuracy(report: dict[str, Any]) -> float:
    return report["models"][-1]["metrics"]["accuracy"]


def apply(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run ``spec`` into ``out``; recipes sharing ``out`` reuse their common cached stages."""
    from compressctl.pipeline import apply as apply_recipe
    from compressctl.recipe import load_recipe

    path = out.parent / f"{out.name}-{spec['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.perf_counter()
    report = apply_recipe(load_recipe(path), out)
    print(
        f"  {spec['name']}: accuracy {final_accuracy(report):.4f} ({time.perf_counter() - started:.0f} s)", flush=True
    )
    return report


def run_seed(seed: int, args: argparse.Namespace, out: Path) -> dict[str, float]:
    train_teacher = {"type": "train", "epochs": args.teacher_epochs, "lr": 0.002}
    student = {"factory": "compressctl.zoo:digits_resnet", "kwargs": {"width": args.student_width}}
    common = {"epochs": args.epochs, "lr": args.lr, "select_best": False}
    soft = {"temperature": args.temperature, "alpha": args.alpha}
    prune = {"type": "prune", "method": "structured", "amount": args.prune_amount, "importance": "l1"}
    results = {}
    # The teacher-based arms share one output folder, so the teacher is trained once per seed.
    shared = out / f"seed{seed}" / "teacher-arms"
    report = apply(
        recipe(
            "distilled-student",
            seed,
            TEACHER,
            [train_teacher, {"type": "distill", "student": student, "soft": soft, **common}],
        ),
        shared,
    )
    results["teacher"] = report["models"][0]["metrics"]["accuracy"]
    results["student_distilled"] = final_accuracy(report)
    results["student_params_ratio"] = report["models"][-1]["params"] / report["models"][0]["params"]
    labels_only = {**student, "inputs": INPUTS}
    report = apply(
        recipe("labels-only-student", seed, labels_only, [{"type": "train", **common}]),
        out / f"seed{seed}" / "labels-only",
    )
    results["student_labels_only"] = final_accuracy(report)
    report = apply(
        recipe(
            "prune-finetune",
            seed,
            TEACHER,
            [
                train_teacher,
                prune,
                {"type": "finetune", "epochs": args.recover_epochs, "lr": args.recover_lr, "select_best": False},
            ],
        ),
        shared,
    )
    results["pruned_finetuned"] = final_accuracy(report)
    report = apply(
        recipe(
            "prune-distill",
            seed,
            TEACHER,
            [
                train_teacher,
                prune,
                {
                    "type": "distill",
                    "epochs": args.recover_epochs,
                    "lr": args.recover_lr,
                    "select_best": False,
                    "soft": soft,
                },
            ],
        ),
        shared,
    )
    results["pruned_distilled"] = final_accuracy(report)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8, help="student epochs, both arms")
    parser.add_argument("--recover-epochs", type=int, default=3, help="epochs after pruning, both arms")
    parser.add_argument("--lr", type=float, default=0.004, help="student learning rate, both arms")
    parser.add_argument("--recover-lr", type=float, default=0.002, help="learning rate after pruning, both arms")
    parser.add_argument("--student-width", type=int, default=8, help="digits_resnet width of the student (teacher: 32)")
    parser.add_argument("--prune-amount", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0, help="distill soft.temperature")
    parser.add_argument("--alpha", type=float, default=0.5, help="distill soft.alpha (share of the soft term)")
    parser.add_argument("--out", type=Path, default=Path("out/compare-distillation"))
    args = parser.parse_args()

    per_seed = {}
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        per_seed[seed] = run_seed(seed, args, args.out)
    keys = list(next(iter(per_seed.values())))
    mean = {k: statistics.fmean(r[k] for r in per_seed.values()) for k in keys}
    print(f"\nmean over seeds {args.seeds}:")
    for k in keys:
        print(f"  {k:22s} {mean[k]:.4f}   per seed: " + " ".join(f"{per_seed[s][k]:.4f}" for s in args.seeds))
    verdicts = {
        "distilled student beats labels-only student": mean["student_distilled"] > mean["student_labels_only"],
        "prune+distill recovers at least as much as prune+finetune": mean["pruned_distilled"]
        >= mean["pruned_finetuned"],
    }
    for text, ok in verdicts.items():
        print(f"{'YES' if ok else 'NO '}  {text}")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "per_seed": per_seed,
        "mean": mean,
        "verdicts": verdicts,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

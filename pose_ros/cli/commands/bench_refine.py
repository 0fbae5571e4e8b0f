"""`pose-ros bench-refine`: ICP from perturbed GT vs OpenCV PPF on the real YCB-V frames."""
from __future__ import annotations

import argparse
from pathlib import Path

_DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ycbv_real"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-refine", help="benchmark depth refinement (ICP) vs the PPF baseline on real YCB-V frames",
        description="Perturb every GT pose of the real YCB-V frames by translation x rotation magnitudes "
                    "(seeded random directions), refine with our ICP, run OpenCV's PPF matcher on the same "
                    "objects/masks, and write a table, a JSON and a PNG plot.")
    p.add_argument("--data", type=Path, default=_DEFAULT_DATA, help="ycbv_real folder (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_refine"), help="output folder")
    p.add_argument("--translations-cm", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--rotations-deg", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    p.add_argument("--directions", type=int, default=3, help="random directions per magnitude pair")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames (quick runs)")
    p.add_argument("--no-ppf", action="store_true", help="skip the PPF baseline")
    p.add_argument("--icp-mask", choices=("gt", "none"), default="gt",
                   help="scene crop for our ICP: the GT visible mask (default) or none (model silhouette at "
                        "the start pose); PPF always uses the GT mask")
    p.add_argument("--calibrate", action="store_true",
                   help="also run larger perturbations (6cm/30deg, 8cm/45deg, 10cm/90deg, method icp_cal) and fit "
                        "pose_score's logistic weights on all ICP outputs; prints them")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    import logging

    from pose_ros.eval.ycbv_refine_bench import (YcbvDataError, calibrate_score_weights, format_summary,
                                                 plot_summary, run_refine_bench, summarize)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.data.is_dir():
        print(f"error: data folder not found: {args.data} (pass --data ../shared/data/ycbv_real)")
        return 2
    if args.directions < 1:
        print("error: --directions must be >= 1")
        return 2
    try:
        cases = run_refine_bench(args.data, [t / 100.0 for t in args.translations_cm], args.rotations_deg,
                                 directions=args.directions, seed=args.seed, run_ppf=not args.no_ppf,
                                 max_frames=args.max_frames, icp_mask=args.icp_mask,
                                 calibration_levels=((0.06, 30.0), (0.08, 45.0), (0.1, 90.0)) if args.calibrate else ())
    except YcbvDataError as exc:
        print(f"error: {exc}")
        return 2
    rows = summarize(cases)
    text = format_summary(rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.txt").write_text(text + "\n")
    out = {"rows": rows, "cases": [c.__dict__ | {"success": c.success, "success_strict": c.success_strict}
                                   for c in cases]}
    if args.calibrate:
        w, stats = calibrate_score_weights(cases)
        print(f"pose_score calibration: {w} {stats}")
        out["calibration"] = {"weights": w.__dict__, "stats": stats}
    (args.out / "results.json").write_text(json.dumps(out, indent=1, default=float))
    png = plot_summary(cases, rows, args.out / "refine_bench.png")
    print(f"wrote {args.out / 'summary.txt'}, {args.out / 'results.json'}, {png}")
    return 0

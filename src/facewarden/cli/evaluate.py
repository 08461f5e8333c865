"""``facewarden eval ...``: reproducible accuracy measurements on labelled data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from facewarden.cli import output

if TYPE_CHECKING:
    from facewarden.calibration import Calibration
    from facewarden.config import Settings

eval_app = typer.Typer(no_args_is_help=True, help="Measure accuracy on labelled data.")


def _progress(label: str, quiet: bool) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=output.err,
        disable=quiet or (not output.err.is_terminal and "CI" in os.environ),
    )


def _settings(**overrides: object) -> Settings:
    """The settings with the command's options applied; a bad value is a clear error."""
    from pydantic import ValidationError

    from facewarden.config import Settings
    from facewarden.core.errors import InvalidInput

    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(problems) from None


@eval_app.command("lfw")
def eval_lfw(
    data: Annotated[Path, typer.Option(help="LFW folder (<Name>/<Name>_NNNN.jpg).")],
    pairs: Annotated[Path, typer.Option(help="Pairs file to report on, e.g. pairsDevTest.txt.")],
    train_pairs: Annotated[
        Path | None, typer.Option(help="Pairs file to choose a threshold on (pairsDevTrain.txt).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a ROC/DET plot (PNG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON result.")] = False,
    detector: Annotated[
        str | None, typer.Option(help="hog, cnn or hybrid (default: the setting).")
    ] = None,
    upsample: Annotated[
        int | None, typer.Option(help="Detector upsampling 0-4 (default: the setting).")
    ] = None,
    flip: Annotated[
        bool | None,
        typer.Option("--flip/--no-flip", help="Flip-averaged descriptors (default: the setting)."),
    ] = None,
) -> None:
    """LFW verification over the full pipeline: accuracy at 0.6, k-fold, TAR@FAR, EER, each
    split into pairs with a face detected in both images and pairs that used the fallback."""
    from facewarden.evaluation.lfw import evaluate_lfw, plot_roc

    settings = _settings(detector=detector, upsample=upsample, descriptor_flip=flip)
    n = workers or settings.workers
    with _progress("embedding LFW images", as_json) as bar:
        task = bar.add_task("", total=None)
        result, curves = evaluate_lfw(
            data,
            pairs,
            settings,
            train_file=train_pairs,
            workers=n,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    result["command"] = "facewarden " + " ".join(sys.argv[1:])
    if plot:
        plot_roc(curves, plot, f"LFW {pairs.name}: {result['pairs']} pairs")
        result["plot"] = str(plot)
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        output.emit_json(result)
        return
    table = Table(title=f"LFW verification: {pairs.name}", show_header=False, show_edge=False)
    rows = [
        ("pairs (genuine / impostor)", f"{result['genuine_pairs']} / {result['impostor_pairs']}"),
        (
            "images (no face / several)",
            f"{result['images']} "
            f"({result['images_without_face']} / {result['images_with_several_faces']})",
        ),
        (
            f"accuracy at {result['fixed_threshold']}",
            f"{result['accuracy_at_fixed_threshold']:.4f}",
        ),
        ("test images without a detected face", str(result["test_images_without_face"])),
    ]
    if "accuracy_at_train_threshold" in result:
        rows.append(
            (
                f"accuracy at {result['threshold_chosen_on_train']} (chosen on train)",
                f"{result['accuracy_at_train_threshold']:.4f}",
            )
        )
        split = result["at_train_threshold"]
        for key, label in (("detected_both", "face detected in both"), ("fallback", "fallback")):
            acc = split[f"accuracy_{key}"]
            rows.append(
                (
                    f"  pairs with {label}",
                    f"{split[f'pairs_{key}']} pairs, "
                    + (f"accuracy {acc:.4f}" if acc is not None else "none"),
                )
            )
    if "k_fold" in result:
        k = result["k_fold"]
        rows.append((f"{k['folds']}-fold accuracy", f"{k['mean_accuracy']:.4f} ± {k['std']:.4f}"))
    rows += [
        (
            "TAR at FAR 1e-3",
            f"{result['tar_at_far_1e-3']:.4f} (t = {result['threshold_at_far_1e-3']})",
        ),
        ("EER", f"{result['eer']:.4f}"),
        ("time", f"{result['seconds']} s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    output.out.print(table)


@eval_app.command("identify")
def eval_identify(
    data: Annotated[Path, typer.Option(help="LFW-layout folder (<Name>/<Name>_NNNN.jpg).")],
    distractors: Annotated[
        int, typer.Option(help="Synthetic distractor templates added to the gallery.")
    ] = 0,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON result.")] = False,
    gallery_size: Annotated[
        list[int] | None,
        typer.Option(
            help="Report predicted vs observed FPIR at this gallery size (repeatable; "
            "synthetic distractors above the real gallery)."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Templates cache file (npz) to reuse embeddings (default: "
            "$XDG_CACHE_HOME/facewarden/eval/<folder>-templates.npz; kept per recipe)."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Embed every image anew.")] = False,
    calibration: Annotated[
        Path | None,
        typer.Option(help="Calibration table (JSON) to predict from (default: the committed one)."),
    ] = None,
) -> None:
    """1:N identification: rank-1/rank-10 rates, FNIR at FPIR 1% and 0.1%, and with
    --gallery-size the FPIR the calibration predicts against the FPIR observed."""
    from facewarden.config import Settings
    from facewarden.evaluation.identify import evaluate_identification

    settings = Settings()
    cal = _calibration(calibration) if calibration else None
    if no_cache:
        cache = None
    elif cache is None:
        cache = eval_cache(data)
    with _progress("embedding images", as_json) as bar:
        task = bar.add_task("", total=None)
        result = evaluate_identification(
            data,
            settings,
            distractors=distractors,
            workers=workers or settings.workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            gallery_sizes=gallery_size,
            cache=cache,
            calibration=cal,
        )
    result["command"] = "facewarden " + " ".join(sys.argv[1:])
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        output.emit_json(result)
        return
    table = Table(title="1:N identification", show_header=False, show_edge=False)
    rows = [
        ("gallery (real + synthetic)", f"{result['gallery_real']} + {distractors}"),
        (
            "mated / non-mated searches",
            f"{result['mated_searches']} / {result['nonmated_searches']}",
        ),
        ("rank-1 identification rate", f"{result['rank1_identification_rate']:.4f}"),
        ("rank-10 identification rate", f"{result['rank10_identification_rate']:.4f}"),
        (
            f"FPIR at {result['fixed_threshold']}",
            f"{result['fpir_at_fixed_threshold']:.4f}",
        ),
        (
            "FNIR at FPIR 1%",
            f"{result['fnir_at_fpir_0.01']:.4f} (t = {result['threshold_at_fpir_0.01']})",
        ),
        (
            "FNIR at FPIR 0.1%",
            f"{result['fnir_at_fpir_0.001']:.4f} (t = {result['threshold_at_fpir_0.001']})",
        ),
        ("time", f"{result['seconds']} s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    output.out.print(table)
    if "fpir_predicted_vs_observed" in result:
        print_fpir(result["fpir_predicted_vs_observed"])


def eval_cache(data: Path) -> Path:
    """Default templates cache of a research folder: ``$XDG_CACHE_HOME/facewarden/eval``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facewarden" / "eval" / f"{data.resolve().name}-templates.npz"


def _calibration(path: Path) -> Calibration:
    from facewarden.calibration import from_dict
    from facewarden.core.errors import InvalidInput

    try:
        return from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"--calibration {path}: not a calibration table ({exc})") from None


def print_fpir(pvo: dict[str, Any]) -> None:
    if "error" in pvo:
        output.out.print(f"FPIR by gallery size: {pvo['error']}")
        return
    t = Table(title="FPIR predicted (calibration) vs observed (non-mated probes)", show_edge=False)
    for col in ("gallery", "distractors", "policy", "t", "predicted", "observed (95% CI)",
                "holds", "synth. FMR / real"):  # fmt: skip
        t.add_column(col, no_wrap=True)
    for r in pvo.get("rows", []):
        ratio = r["synthetic_fmr_ratio_at_threshold"]
        synth = "-"
        if r["synthetic_distractors"]:
            realistic = r["synthetic_realistic_at_threshold"]
            synth = "n/a: too few real pairs" if ratio is None else f"{ratio:.3g}"
            synth += " (unlike real)" if realistic is False else ""
        t.add_row(
            f"{r['gallery_size']:,}",
            f"{r['synthetic_distractors']:,} {r['distractor_method']}"
            if r["synthetic_distractors"]
            else "none (real)",
            r["policy"],
            f"{r['threshold']:.3f}",
            f"{r['predicted_fpir']:.4f}" + (" (bound)" if r["fmr_at_floor"] else ""),
            f"{r['observed_fpir']:.4f} ({r['observed_95ci'][0]:.4f}-{r['observed_95ci'][1]:.4f})",
            "yes" if r["within_tolerance"] else "NO",
            synth,
        )
    output.out.print(t)
    output.out.print(f"tolerance: {pvo.get('tolerance')}")
    for name, fid in (pvo.get("synthetic_fidelity") or {}).items():
        output.out.print(
            f"{name} distractors: KS D {fid['ks_probe_distances']} against real strangers "
            f"(distances from the probes), {fid['ks_among_themselves']} among themselves"
        )
    if not pvo.get("calibration_recipe_matches_settings", True):
        output.out.print(
            "warning: the calibration was made with other detection settings "
            f"({pvo['calibration']['recipe']}) than these ({pvo['settings_detection']})"
        )

"""Ablation benchmark on the demo's synthetic data: train named GLSCL variants on the same generated and ingested
videos, once per seed, and compare their held-out retrieval metrics and order-test accuracy in one table per
ablation.

Why: whether a setting (the ICL form, the temporal transformer's starting weights, a whole recipe) helps can only
be judged against seed noise, so every variant trains on identical data with identical epochs, batch and seeds,
and only its own settings differ.

How: the data is made and ingested by the demo's own stages (`pipelines.demo.generate`, `ingest_config`,
`ingest_flow`), which reuse what is already there. A variant is a recipe plus GLSCLConfig overrides on the demo's
tiny head. Each (effective settings, seed) trains once with `train_flow` into OUTPUT/runs/<settings>/seed<N>, so
variants that name the same settings share their runs, and a run whose result file is there is reused: a stopped
benchmark resumes, and an ablation added later trains only what is new. Each run reports the best checkpoint's
held-out text-to-video and video-to-text metrics, the last evaluation's t2v R@1 and the demo's order test.
Writes OUTPUT/ablation.json, ablation.md and ablation.png, logs one line per run and returns the Markdown.

Usage: glscl bench ablation [--demo-dir DIR] [--output DIR] [--variant NAME:KEY=VALUE,...]...
       [--ablation TITLE:NAME,NAME,...]... [--seeds N...] [--epochs N] [--batch-size N]
Nothing here is asserted on the numbers; they go into benchmarks/RESULTS.md with the command that made them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from prefect import flow

from glscl.checkpoint import load_checkpoint
from glscl.config import GLSCLConfig
from glscl.recipes import RECIPES, recipe
from pipelines.configs import DemoConfig, TrainFlowConfig
from pipelines.demo import generate, ingest_config, train_config
from pipelines.ingest import ingest_flow
from pipelines.train import train_flow
from schemas.catalog import Catalog
from schemas.store import StoreConfig
from workers.features import FeatureQuery, read_split
from workers.plots import new_figure, save_figure
from workers.synthetic.order_test import WRONG, order_test
from workers.synthetic.videos import SyntheticDataset
from workers.train.baselines import linear_baseline
from workers.train.worker import HISTORY_FILE, History

RESULT_FILE = "result.json"
RECIPE_KEY = "recipe"
TRAINED = "GLSCL trained"
LINEAR = "mean pooling + linear (trained)"
DEFAULT_BASELINE = "ICL authors + CLIP init (default)"
Log = Callable[[str], None]


def to_stderr(line: str) -> None:
    """The default progress log: one line to standard error (standard output carries only the report)."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Variant:
    """A named training variant: a recipe and GLSCLConfig overrides applied on top of the demo's tiny head."""

    name: str
    recipe: str = "project"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ablation:
    """A titled group of variants compared in one table (variants may appear in several ablations)."""

    title: str
    variants: tuple[str, ...]


@dataclass(frozen=True)
class AblationConfig:
    """The data and training settings (the demo's), the variants, how they are grouped, the seeds, and where to
    write. Every variant trains once per seed with `demo`'s epochs and batch size."""

    demo: DemoConfig
    variants: tuple[Variant, ...]
    ablations: tuple[Ablation, ...]
    seeds: tuple[int, ...]
    output_dir: str

    def __post_init__(self) -> None:
        names = [variant.name for variant in self.variants]
        if not self.ablations:
            raise ValueError("name at least one ablation (a table of variants)")
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        for ablation in self.ablations:
            unknown = [name for name in ablation.variants if name not in names]
            if unknown:
                raise ValueError(f"ablation {ablation.title!r} names unknown variants {unknown}; known: {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")


def _setting_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_variant(text: str) -> Variant:
    """A variant from `NAME:KEY=VALUE,KEY=VALUE` (or just `NAME`): GLSCLConfig fields as `glscl train --set` takes
    them (a value is JSON when it parses as JSON, else a string) and `recipe=NAME` for a recipe."""
    name, _, settings = text.partition(":")
    if not name.strip():
        raise ValueError(f"a variant needs a name before ':', got {text!r}")
    chosen, overrides = "project", {}
    for pair in filter(None, (part.strip() for part in settings.split(","))):
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not key:
            raise ValueError(f"variant {name.strip()!r}: expected KEY=VALUE, got {pair!r}")
        if key == RECIPE_KEY:
            recipe(value)
            chosen = value
        else:
            overrides[key] = _setting_value(value)
    known = {f.name for f in dataclasses.fields(GLSCLConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"variant {name.strip()!r}: unknown GLSCLConfig field(s) {unknown}")
    return Variant(name.strip(), chosen, overrides)


def parse_ablation(text: str) -> Ablation:
    """An ablation from `TITLE:NAME,NAME,...` (variant names as given to `parse_variant`)."""
    title, sep, names = text.partition(":")
    variants = tuple(filter(None, (name.strip() for name in names.split(","))))
    if not sep or not title.strip() or not variants:
        raise ValueError(f"an ablation is TITLE:VARIANT,VARIANT,..., got {text!r}")
    return Ablation(title.strip(), variants)


def default_ablations() -> tuple[tuple[Variant, ...], tuple[Ablation, ...]]:
    """The issue's two ablations on the default settings: the ICL form (the authors', the batch mean, off) and the
    temporal transformer's start (the backbone's text tower, random). The default variant is the baseline of
    both, so it trains once per seed. Both starts take the backbone's activation, so only the starting weights
    differ."""
    variants = (
        Variant(DEFAULT_BASELINE),
        Variant("ICL mean", overrides={"icl_form": "mean"}),
        Variant("ICL off", overrides={"icl_weight": 0}),
        Variant("random temporal init", overrides={"temporal_init": "random"}),
    )
    ablations = (
        Ablation("ICL form", (DEFAULT_BASELINE, "ICL mean", "ICL off")),
        Ablation("Temporal transformer initialisation", (DEFAULT_BASELINE, "random temporal init")),
    )
    return variants, ablations


@flow(name="glscl-ablation-data")
def prepare_data(demo: DemoConfig) -> SyntheticDataset:
    """Generate and ingest the demo's videos with the demo's own stages; both reuse what is already there
    (generation is stamped with its settings, ingest skips stored videos), so only the first call pays."""
    dataset = generate(demo)
    ingested = ingest_flow(ingest_config(demo, dataset))
    if ingested.exit_code:
        raise RuntimeError(f"ingest of {demo.out_dir} failed for some videos: {ingested.failures}")
    return dataset


def variant_flow(base: TrainFlowConfig, variant: Variant, seed: int, output_dir: str) -> TrainFlowConfig:
    """`base` with the variant's recipe and overrides, the seed, and its own output folder."""
    train = replace(base.train, seed=seed)
    return replace(
        base, recipe=variant.recipe, head_overrides=dict(variant.overrides), train=train, output_dir=output_dir
    )


def feature_shape(base: TrainFlowConfig) -> tuple[int, int]:
    """(feature width, frames per video) of the stored training split, which size every head."""
    features = read_split(Catalog(base.store), FeatureQuery(base.split, base.backbone.model_id, base.max_words))
    return features.video_feats.shape[2], features.video_feats.shape[1]


def run_key(base: TrainFlowConfig, variant: Variant, shape: tuple[int, int]) -> str:
    """A folder name for the model the variant trains: its recipe, then the head settings that differ from what
    the recipe gives on the demo's head, as `TrainFlowConfig.head` resolves them (so `icl_form=authors`, a default,
    names the same run as no override). Variants with equal keys share their runs."""
    plain = replace(base, recipe=variant.recipe, head_overrides={}).head(*shape).to_dict()
    mine = replace(base, recipe=variant.recipe, head_overrides=dict(variant.overrides)).head(*shape)
    changed = [(key, value) for key, value in sorted(mine.to_dict().items()) if plain[key] != value]
    parts = [
        variant.recipe,
        *(f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in changed),
    ]
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", "+".join(parts))


def order_accuracies(flow: TrainFlowConfig, checkpoint: str) -> dict[str, float]:
    """The demo's order test (`workers.synthetic.order_test`) of a run's checkpoint on the held-out split, next to the
    order-blind baselines; the linear one is fitted with the run's batch and seed, as in `pipelines.demo`."""
    catalog = Catalog(flow.store)
    model, _, _ = load_checkpoint(checkpoint)
    model_id = flow.backbone.model_id
    linear = linear_baseline(catalog, FeatureQuery(flow.split, model_id, flow.max_words), flow.train)
    return order_test(catalog, FeatureQuery(flow.val_split, model_id, flow.max_words), flow.backbone, model, linear)


def scorer_values(metrics: dict[str, dict], order: dict[str, float], scorer: str) -> dict[str, float]:
    """The table's columns for one scorer: held-out t2v and v2t R@1/R@5/R@10/MnR and its order-test accuracies
    (all four candidates, then the true paragraph against each wrong one alone)."""
    values = {
        f"{direction} {name}": metrics[direction][name]
        for direction in ("t2v", "v2t")
        for name in ("R@1", "R@5", "R@10", "MnR")
    }
    values["order 4-way %"] = order[scorer]
    values.update({f"vs {wrong} %": order[f"{scorer} vs {wrong}"] for wrong in WRONG})
    return values


def train_run(flow: TrainFlowConfig) -> dict[str, Any]:
    """Train one run with `train_flow` (which resumes a stopped one) and measure it: the best checkpoint's values
    (`scorer_values`), the last evaluation's t2v R@1 and step (the best is picked on the held-out split itself,
    so the last is the unselected reference), and the order-blind linear baseline's values."""
    start = time.perf_counter()
    summary = train_flow(flow)
    order = order_accuracies(flow, summary.checkpoint)
    best = next(metrics for name, metrics in summary.metrics.items() if name.startswith(f"{TRAINED} (best"))
    history = History(Path(flow.output_dir) / HISTORY_FILE, writer=False).read()
    last = [record for record in history if record.get("event") == "eval"][-1]
    values = scorer_values(best, order, TRAINED)
    values.update({f"last {direction} R@1": last[direction]["R@1"] for direction in ("t2v", "v2t")})
    values.update({"best step": best["step"], "last step": last["step"]})
    return {
        "values": values,
        "reference": scorer_values(summary.metrics[LINEAR], order, LINEAR),
        "order_videos": order["videos"],
        "seconds": time.perf_counter() - start,
    }


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_settings(demo: DemoConfig, flow: TrainFlowConfig, shape: tuple[int, int]) -> dict[str, Any]:
    """What decides a run's result, as JSON: the generated data, the flow's data and training settings with the
    head config and training config as resolved (preset, recipe, overrides), not as spelt, so variants spelt
    differently but training the same model may share it."""
    resolved = {
        "head": flow.head(*shape).to_dict(),
        "train": flow.train_settings().to_dict(),
    }
    flow_settings = {**asdict(flow), "output_dir": None, "head_overrides": None, "train": None}
    return _as_json({"data": asdict(demo.synthetic()), "flow": flow_settings, **resolved})


def run_once(flow: TrainFlowConfig, settings: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The run's result and whether it was reused: read from its result file when that was written with the same
    `settings`, else trained now (`train_run`) and saved. A result file with other settings is an error: the
    output folder belongs to another benchmark."""
    path = Path(flow.output_dir) / RESULT_FILE
    if path.exists():
        done = json.loads(path.read_text())
        if done["settings"] != settings:
            raise ValueError(f"{path} was made with other settings; use another output folder")
        return done, True
    result = {"settings": settings, **train_run(flow)}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result, False


def machine() -> str:
    """The machine the runs trained on, in words."""
    device = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.get_num_threads()} "
        f"threads{device}"
    )


def run_ablation(config: AblationConfig, log: Log = to_stderr, command: str = "") -> dict:
    """Prepare the data, train every (variant settings, seed) not already done, and write the JSON, Markdown and
    PNG reports (`write_reports`) into `config.output_dir`; returns the report. `command` is recorded in it."""
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dataset = prepare_data(config.demo)
    log(
        f"data: {dataset.n_train} train / {dataset.n_val} held-out videos in {config.demo.store.uri}, ready in "
        f"{time.perf_counter() - start:.0f} s"
    )
    base = train_config(config.demo)
    shape = feature_shape(base)
    keys = {variant.name: run_key(base, variant, shape) for variant in config.variants}
    trains: dict[str, Variant] = {}
    for variant in config.variants:
        trains.setdefault(keys[variant.name], variant)
    plan = [(key, seed) for key in trains for seed in config.seeds]
    results, runs = {}, []
    for index, (key, seed) in enumerate(plan, start=1):
        flow = variant_flow(base, trains[key], seed, str(output / "runs" / key / f"seed{seed}"))
        settings = run_settings(config.demo, flow, shape)
        result, reused = run_once(flow, settings)
        results[key, seed] = result
        runs.append({"run_key": key, "seed": seed, "dir": flow.output_dir, "seconds": result["seconds"]})
        names = ", ".join(name for name, named in keys.items() if named == key)
        values = result["values"]
        state = f"reused (trained in {result['seconds']:.0f} s)" if reused else f"{result['seconds']:.0f} s"
        log(
            f"[{index}/{len(plan)}] {names} (seed {seed}): t2v R@1 {values['t2v R@1']:.1f}, v2t R@1 "
            f"{values['v2t R@1']:.1f}, order {values['order 4-way %']:.1f} % - {state}"
        )
    report = {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "data": {**asdict(config.demo.synthetic()), "out_dir": config.demo.out_dir, "store": config.demo.store.uri},
        "training": {"epochs": base.train.epochs, "batch_size": base.train.batch_size, "head": base.head_preset},
        "seeds": list(config.seeds),
        "variants": [{**asdict(variant), "run_key": keys[variant.name]} for variant in config.variants],
        "ablations": [asdict(ablation) for ablation in config.ablations],
        "results": [
            {
                "variant": variant.name,
                "seed": seed,
                "run_key": keys[variant.name],
                "values": results[keys[variant.name], seed]["values"],
                "reference": results[keys[variant.name], seed]["reference"],
                "order_videos": results[keys[variant.name], seed]["order_videos"],
            }
            for variant in config.variants
            for seed in config.seeds
        ],
        "runs": runs,
    }
    report = _as_json(report)
    write_reports(report, output)
    return report


COLUMNS = (
    *(f"{direction} {name}" for direction in ("t2v", "v2t") for name in ("R@1", "R@5", "R@10", "MnR")),
    "order 4-way %",
    *(f"vs {wrong} %" for wrong in WRONG),
    "last t2v R@1",
    "best step",
)


def mean_values(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Column-wise mean of several runs' values (the columns every row has)."""
    return {column: statistics.fmean(row[column] for row in rows) for column in rows[0]}


def _cells(values: dict[str, float]) -> str:
    return " | ".join(
        "" if column not in values else f"{values[column]:.0f}" if column.endswith("step") else f"{values[column]:.1f}"
        for column in COLUMNS
    )


def ablation_table(report: dict, ablation: dict) -> list[str]:
    """One ablation as Markdown: per variant a mean row over the seeds and a row per seed, then the order-blind
    linear baseline (mean over the seeds) as a reference."""
    lines = [
        f"### {ablation['title']}",
        "",
        "| variant | seed | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    references = []
    for name in ablation["variants"]:
        rows = [result for result in report["results"] if result["variant"] == name]
        lines.append(f"| **{name}** | mean | {_cells(mean_values([row['values'] for row in rows]))} |")
        lines += [f"| | {row['seed']} | {_cells(row['values'])} |" for row in rows]
        references = references or [row["reference"] for row in rows]
    lines.append(f"| {LINEAR}, order-blind (reference) | mean | {_cells(mean_values(references))} |")
    return lines


def to_markdown(report: dict) -> str:
    """The report as Markdown: how it was made, what each variant sets, then one table per ablation."""
    data, training = report["data"], report["training"]
    lines = [
        f"## Ablations on the synthetic demo data ({report['date']})",
        "",
        f"- command: `{report['command'] or 'run_ablation(...)'}`",
        f"- machine: {report['machine']}",
        f"- data: {data['n_train']} train / {data['n_val']} held-out synthetic videos (data seed {data['seed']}) in "
        f"{data['store']}; {training['head']} head, {training['epochs']} epochs, batch {training['batch_size']}, "
        f"seeds {', '.join(map(str, report['seeds']))}",
        "- values: the best held-out checkpoint (by t2v R@1, picked on the same held-out split) and its order test "
        f"on {int(report['results'][0]['order_videos'])} two-event videos (chance 25% for 4-way, 50% pairwise); "
        "`last t2v R@1` is the last evaluation, which no selection favours",
        "",
        "| variant | recipe | overrides | run folder |",
        "|---|---|---|---|",
    ]
    for variant in report["variants"]:
        overrides = ", ".join(f"{key}={value}" for key, value in variant["overrides"].items()) or "(defaults)"
        lines.append(f"| {variant['name']} | {variant['recipe']} | {overrides} | runs/{variant['run_key']} |")
    for ablation in report["ablations"]:
        lines += ["", *ablation_table(report, ablation)]
    return "\n".join(lines) + "\n"


def save_plot(report: dict, path: Path) -> Path:
    """Held-out R@1 per variant, one panel per ablation: each seed's t2v and v2t R@1 as points, the seed mean as a
    bar outline."""
    figure, _ = new_figure(len(report["ablations"]), (5 * len(report["ablations"]), 4.5))
    for axis, ablation in zip(figure.axes, report["ablations"], strict=True):
        for offset, direction, marker in ((-0.15, "t2v", "o"), (0.15, "v2t", "^")):
            column = f"{direction} R@1"
            for position, name in enumerate(ablation["variants"]):
                points = [r["values"][column] for r in report["results"] if r["variant"] == name]
                axis.scatter(
                    [position + offset] * len(points),
                    points,
                    marker=marker,
                    color=f"C{offset > 0:d}",
                    label=column if position == 0 else None,
                    zorder=3,
                )
                axis.bar(
                    position + offset, statistics.fmean(points), width=0.28, fill=False, edgecolor=f"C{offset > 0:d}"
                )
        axis.set_xticks(range(len(ablation["variants"])), ablation["variants"], rotation=15, ha="right")
        axis.set(ylabel="held-out R@1 (%), points = seeds", title=ablation["title"])
    return save_figure(figure, path)


def write_reports(report: dict, output: Path) -> str:
    """Write ablation.json, ablation.md and ablation.png into `output`; returns the Markdown."""
    markdown = to_markdown(report)
    (output / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "ablation.md").write_text(markdown)
    save_plot(report, output / "ablation.png")
    return markdown


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options; data and training defaults are the demo's (`DemoConfig`)."""
    demo = DemoConfig()
    parser = argparse.ArgumentParser(prog="glscl bench ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--demo-dir",
        default=demo.out_dir,
        help=f"demo folder (as `glscl demo --out`): videos, annotations and lancedb/, made here when missing "
        f"(default {demo.out_dir})",
    )
    parser.add_argument("--output", default=None, help="report and run folder (default DEMO_DIR/ablation)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="a variant: GLSCLConfig overrides as with `glscl train --set` and recipe=NAME "
        f"({'|'.join(sorted(RECIPES))}), e.g. 'ICL mean:icl_form=mean' (repeatable; default: the ICL-form and "
        "temporal-initialisation ablations)",
    )
    parser.add_argument(
        "--ablation",
        action="append",
        default=[],
        metavar="TITLE:NAME,NAME,...",
        help="a table comparing the named variants (repeatable; default: one table of every --variant)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    parser.add_argument("--epochs", type=int, default=demo.train_epochs, help=f"epochs (default {demo.train_epochs})")
    parser.add_argument(
        "--batch-size", type=int, default=demo.batch_size, help=f"batch size (default {demo.batch_size})"
    )
    parser.add_argument(
        "--train-videos", type=int, default=demo.train_videos, help=f"training videos (default {demo.train_videos})"
    )
    parser.add_argument(
        "--val-videos", type=int, default=demo.val_videos, help=f"held-out videos (default {demo.val_videos})"
    )
    parser.add_argument(
        "--data-seed", type=int, default=demo.seed, help=f"seed of the generated data (default {demo.seed})"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> AblationConfig:
    """The AblationConfig named by the options."""
    demo = DemoConfig(
        out_dir=args.demo_dir,
        store=StoreConfig(f"{args.demo_dir}/lancedb"),
        train_videos=args.train_videos,
        val_videos=args.val_videos,
        seed=args.data_seed,
        train_epochs=args.epochs,
        batch_size=args.batch_size,
    )
    variants, ablations = default_ablations()
    if args.variant:
        variants = tuple(parse_variant(text) for text in args.variant)
        ablations = (Ablation("Ablation", tuple(variant.name for variant in variants)),)
    ablations = tuple(parse_ablation(text) for text in args.ablation) or ablations
    output = args.output or f"{args.demo_dir}/ablation"
    return AblationConfig(demo, variants, ablations, tuple(args.seeds), output)


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmark from the command line, write its reports and return the Markdown."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    command = shlex.join(["glscl", "bench", "ablation", *(sys.argv[1:] if argv is None else argv)])
    return to_markdown(run_ablation(config, command=command))


if __name__ == "__main__":
    print(main())

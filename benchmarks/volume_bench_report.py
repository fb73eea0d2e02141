"""Medians, targets, a run-time estimate and the Markdown report of volume_bench.py."""

from __future__ import annotations

import math
import statistics
from typing import Any

from volume_bench_data import FULL_SIZES, ROI, parse_size, size_label, window_count

FLATNESS_MAX = 1.2  # the 2D target (issue: 4x pixels -> <= 1.2x memory), applied to voxels
AGREEMENT_MIN = 0.9999


def _med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def _ratio(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None or y == 0 else x / y


def _contender(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one contender's repetitions in one configuration."""
    out: dict[str, Any] = {
        "wall_s": _med([r["wall_s"] for r in runs]),
        "walls_s": [round(r["wall_s"], 2) for r in runs],
        "own_s": _med([r["inner_s"] for r in runs]),
        "peak_pss_mib": _med([r["peak_pss_mib"] for r in runs]),
        "peak_rss_sum_mib": _med([r["peak_rss_sum_mib"] for r in runs]),
        "max_peak_pss_mib": max(r["peak_pss_mib"] for r in runs),
    }
    detail = [r["detail"] for r in runs]
    for key in ("startup_s", "load_s", "infer_s", "save_s", "inference_phase_s", "steady_windows_per_s"):
        if any(key in d for d in detail):
            out[key] = _med([d.get(key) for d in detail])
    if any("phases" in d for d in detail):
        keys = ("actors_requested", "first_item_planned", "last_item_done", "exit")
        out["phases_s"] = {k: _med([d["phases"].get(k) for d in detail]) for k in keys}
        out["actors"] = detail[0].get("actors")
    return out


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """``summary`` (per configuration and model-only), ``checks`` and ``estimate`` of a run."""
    runs, c = doc["runs"], doc["config"]
    configs = []
    for size in c["sizes"]:
        for ov in c["overlaps"]:
            key = f"{size_label(size)}/{ov:g}"
            mine = [r for r in runs if r["detail"].get("size") == size_label(size) and r["detail"]["overlap"] == ov]
            base = [r for r in mine if r["kind"] == "baseline"]
            ours = [r for r in mine if r["kind"] == "pipeline"]
            if not base or not ours:
                continue
            b, p = _contender(base), _contender(ours)
            configs.append({
                "key": key, "size": size, "overlap": ov, "voxels": math.prod(size), "windows": base[0]["windows"],
                "baseline": b, "pipeline": p,
                "time_ratio": _ratio(p["wall_s"], b["wall_s"]),
                "memory_ratio": _ratio(p["peak_pss_mib"], b["peak_pss_mib"]),
                "agreement": doc["agreement"].get(key, {}).get("agreement"),
            })
    model_only = {}
    for kind in ("model_only", "model_only_1t"):
        mo = [r for r in runs if r["kind"] == kind]
        if mo:
            model_only[kind] = {
                "threads": mo[0]["detail"]["threads"], "windows": mo[0]["windows"],
                "windows_per_s": _med([r["detail"]["windows_per_s"] for r in mo]),
                "peak_pss_mib": _med([r["peak_pss_mib"] for r in mo]),
            }
    summary = {"configs": configs, **model_only}
    return {"summary": summary, "checks": _checks(summary, c), "estimate": estimate_full_run(doc, summary)}


def _checks(summary: dict[str, Any], c: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(target: str, value: float | None, op: str, threshold: float) -> None:
        ok = None if value is None else {"<=": value <= threshold, ">=": value >= threshold,
                                         "<": value < threshold}[op]
        checks.append({"target": target, "value": value, "op": op, "threshold": threshold, "pass": ok})

    by = {cfg["key"]: cfg for cfg in summary["configs"]}
    for cfg in summary["configs"]:
        check(f"time pipeline / baseline, {size_label(cfg['size'])}, overlap {cfg['overlap']:g}",
              cfg["time_ratio"], "<=", 1.0)
    sizes = c["sizes"]
    if len(sizes) > 1:
        small, big = size_label(sizes[0]), size_label(sizes[-1])
        factor = math.prod(sizes[-1]) / math.prod(sizes[0])
        for ov in c["overlaps"]:
            lo, hi = by.get(f"{small}/{ov:g}"), by.get(f"{big}/{ov:g}")
            if lo is None or hi is None:
                continue
            check(f"memory flatness: pipeline peak {big} / {small} ({factor:g}x voxels), overlap {ov:g}",
                  _ratio(hi["pipeline"]["peak_pss_mib"], lo["pipeline"]["peak_pss_mib"]), "<=", FLATNESS_MAX)
            check(f"memory pipeline / baseline at {big}, overlap {ov:g}", hi["memory_ratio"], "<", 1.0)
    for cfg in summary["configs"]:
        check(f"label agreement, {size_label(cfg['size'])}, overlap {cfg['overlap']:g}",
              cfg["agreement"], ">=", AGREEMENT_MIN)
    return checks


def estimate_full_run(doc: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any] | None:
    """Rough wall time of a default run (256x256x128 and 512³, overlaps 0.25/0.5, 3 repetitions)
    from this run: forward passes at model-only's rates (the pipeline at actors x the 1-thread
    rate), plus each contender's fixed cost per run as measured here (wall - windows / rate)."""
    mo, mo1 = summary.get("model_only"), summary.get("model_only_1t", summary.get("model_only"))
    if not mo or not summary["configs"]:
        return None
    rate, rate1 = mo["windows_per_s"], mo1["windows_per_s"]
    actors = summary["configs"][0]["pipeline"].get("actors") or doc["environment"]["cpu_count"] or 1
    pipe_rate = actors * rate1
    fixed_b = _med([max(cfg["baseline"]["wall_s"] - cfg["windows"] / rate, 0.0) for cfg in summary["configs"]]) or 0.0
    fixed_p = _med([max(cfg["pipeline"]["wall_s"] - cfg["windows"] / pipe_rate, 0.0)
                    for cfg in summary["configs"]]) or 0.0
    fixed_m = _med([r["wall_s"] - r["windows"] / r["detail"]["windows_per_s"] for r in doc["runs"]
                    if r["kind"].startswith("model_only")]) or 0.0
    model_runs = 2 * fixed_m + 32 / rate + 32 / rate1  # the default --model-windows 32, two runs
    sizes, overlaps, reps = [parse_size(s) for s in FULL_SIZES], (0.25, 0.5), 3
    windows = {f"{size_label(s)}/{ov:g}": window_count(s, ROI, ov) for s in sizes for ov in overlaps}
    total_windows = sum(windows.values())
    per_rep = (len(windows) * (fixed_b + fixed_p) + total_windows / rate + total_windows / pipe_rate
               + model_runs)
    gen = sum(math.prod(s) for s in sizes) * 12.0 / 512**3  # ~12 s per 512³ float32 volume (2 cores)
    return {
        "windows_per_rep_per_contender": windows, "model_only_windows_per_s": rate,
        "pipeline_windows_per_s_assumed": pipe_rate, "fixed_baseline_s": fixed_b, "fixed_pipeline_s": fixed_p,
        "seconds": gen + reps * per_rep,
        "note": "forward passes at this run's model-only rates plus this run's fixed costs; the reading, "
                "blending and writing of the big volumes are not included, so a lower bound at these rates",
    }


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------


def _f(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _disturbed(runs: list[dict[str, Any]]) -> str:
    """A warning when another Ray was up before some runs, and the load averages seen."""
    others = sum(bool(r["detail"].get("other_ray_before")) for r in runs)
    loads = [r["detail"]["loadavg_before"] for r in runs if "loadavg_before" in r["detail"]]
    text = f" 1-min load average before the runs: {min(loads):.1f}-{max(loads):.1f}." if loads else ""
    if others:
        text += f" **Another Ray was up before {others} of {len(runs)} runs: timings are not reliable.**"
    return text


def markdown(doc: dict[str, Any]) -> str:
    c, s, env = doc["config"], doc["summary"], doc["environment"]
    inp = c["input"]
    sizes = ", ".join(size_label(x) for x in c["sizes"])
    lines = [
        "# geoseg 3D volume benchmark",
        "",
        f"Volumes {sizes} ({inp['dtype']} {inp['format']}, voxels 0.8 × 0.8 × 1.5 mm, non-identity affine); "
        f"{c['model']}; roi {c['roi']}³, overlaps {', '.join(f'{o:g}' for o in c['overlaps'])}, gaussian, "
        f"batch {c['batch']} for both; baseline torch threads {c['threads']}; pipeline `geoseg run` "
        f"(volume workflow) with {c['workers']}, block size {c['block_size']}; {env['cpu_count']} CPUs; "
        f"medians of {c['reps']} repetition(s); torch {env['torch']}, ray {env['ray']}, monai {env['monai']}, "
        f"nibabel {env['nibabel']}; geoseg {env['geoseg_commit']}."
        + (" **Smoke run: sizes too small to judge the targets.**" if c["smoke"] else "")
        + (" **Another Ray was running: figures are not reliable.**" if env["other_ray_at_start"] else "")
        + _disturbed(doc["runs"]),
        "",
        "| volume | overlap | windows | baseline s | pipeline s | time pipeline / baseline | baseline peak PSS MiB "
        "| pipeline peak PSS MiB | memory pipeline / baseline | label agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cfg in s["configs"]:
        b, p = cfg["baseline"], cfg["pipeline"]
        lines.append(
            f"| {size_label(cfg['size'])} | {cfg['overlap']:g} | {cfg['windows']} | {_f(b['wall_s'])} | "
            f"{_f(p['wall_s'])} | {_f(cfg['time_ratio'], 3)} | {_f(b['peak_pss_mib'], 0)} | "
            f"{_f(p['peak_pss_mib'], 0)} | {_f(cfg['memory_ratio'], 3)} | {_f(cfg['agreement'], 6)} |"
        )
    lines.append("")
    for kind, label in (("model_only", "model-only"), ("model_only_1t", "model-only, 1 torch thread (one actor)")):
        if kind in s:
            m = s[kind]
            lines.append(f"- {label}: **{m['windows_per_s']:.2f} windows/s** ({m['threads']} thread(s), "
                         f"{m['windows']} windows of {c['roi']}³, batch {c['batch']}, after 2 warm-up batches)")
    lines += [
        "",
        "Where the time goes (medians, seconds). Baseline: its own timers. Pipeline: seconds after launch from "
        "its log (1 s resolution); inference windows/s = windows / (first task submitted -> last result "
        "stitched), from its summary.json.",
        "",
        "| volume | overlap | baseline start-up (imports, model) | load | SWI + argmax | save | pipeline: Ray up, "
        "actors requested | first item planned | last item done | exit | inference windows/s | actors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cfg in s["configs"]:
        b, p = cfg["baseline"], cfg["pipeline"]
        ph = p.get("phases_s", {})
        lines.append(
            f"| {size_label(cfg['size'])} | {cfg['overlap']:g} | {_f(b.get('startup_s'), 1)} | "
            f"{_f(b.get('load_s'), 1)} | {_f(b.get('infer_s'), 1)} | {_f(b.get('save_s'), 1)} | "
            f"{_f(ph.get('actors_requested'), 0)} | {_f(ph.get('first_item_planned'), 0)} | "
            f"{_f(ph.get('last_item_done'), 0)} | {_f(ph.get('exit'), 1)} | "
            f"{_f(p.get('steady_windows_per_s'))} | {p.get('actors')} |"
        )
    lines += ["", "| target | value | threshold | result |", "|---|---:|---:|---|"]
    for ch in doc["checks"]:
        res = "n/a" if ch["pass"] is None else ("PASS" if ch["pass"] else "FAIL")
        lines.append(f"| {ch['target']} | {_f(ch['value'], 6 if 'agreement' in ch['target'] else 3)} | "
                     f"{ch['op']} {ch['threshold']} | {res} |")
    lines.append("")
    if s["configs"]:
        big = s["configs"][-1]
        lines.append(f"CPU seconds by process, {size_label(big['size'])} overlap {big['overlap']:g}, first repetition "
                     "(sampled every 0.2 s):")
        lines.append("")
        for kind in ("baseline", "pipeline"):
            run = next((r for r in doc["runs"] if r["kind"] == kind and r["detail"].get("size") ==
                        size_label(big["size"]) and r["detail"]["overlap"] == big["overlap"]), None)
            if run and run["cpu_by_process"]:
                top = run["cpu_by_process"]
                lines.append(f"- {kind}: {sum(v for _, v in top):.1f} CPU s in {run['wall_s']:.1f} s: "
                             + ", ".join(f"{n} {v:.1f}" for n, v in top[:7])
                             + "; at the memory peak: " + ", ".join(f"{n} {v:.0f} MiB" for n, v in run["peak_top"][:5]))
        lines.append("")
    for key, ag in doc["agreement"].items():
        if "agreement" in ag:
            shares = ", ".join(f"{k}: {v:.3f}" for k, v in ag["baseline_class_shares"].items())
            lines.append(f"- labels {key}: {ag['differing']} of {ag['voxels']} voxels differ; baseline class shares "
                         f"{shares}; pipeline labels {ag['pipeline_dtype']}, affine equal to the input's: "
                         f"{ag['pipeline_affine_equal']}")
        else:
            lines.append(f"- labels {key}: {ag.get('error')}")
    est = doc.get("estimate")
    if est:
        lines.append(
            f"- estimated wall time of a default run (256x256x128 and 512³, overlaps 0.25 and 0.5, 3 repetitions) "
            f"from this run's rates: **{est['seconds'] / 60:.0f} min** (model-only "
            f"{est['model_only_windows_per_s']:.2f} windows/s, pipeline assumed "
            f"{est['pipeline_windows_per_s_assumed']:.2f}, fixed cost per run baseline "
            f"{est['fixed_baseline_s']:.1f} s, pipeline {est['fixed_pipeline_s']:.1f} s; {est['note']})."
        )
    lines += [
        f"- inputs: generated {inp['dtype']} {inp['format']} (seconds to write: "
        + ", ".join(f"{k} {v:.1f}" for k, v in inp["generation_s"].items()) + ").",
        "- end-to-end: wall time of the subprocess, launch to exit (imports, Ray start-up and shutdown, model "
        "load, reading and writing included). Peak PSS: max over 0.2 s samples of the summed PSS of the process "
        "tree and the run's Ray processes (exact PSS every "
        f"{c['pss_every_s']} s, carried forward by RSS changes in between); the sampler used "
        f"{sum(r['sampler_cpu_s'] for r in doc['runs']):.1f} CPU s over {sum(r['wall_s'] for r in doc['runs']):.0f} s "
        "of runs.",
        f"- total benchmark time {doc['total_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)

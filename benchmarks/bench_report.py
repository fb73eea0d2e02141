"""The Markdown report of landcover_bench.py."""

from __future__ import annotations

from typing import Any


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(doc: dict[str, Any]) -> str:
    c, s, env = doc["config"], doc["summary"], doc["environment"]
    lines = [
        "# geoseg 2D raster benchmark",
        "",
        f"{c['scenes']} scene(s) of {c['size']}^2" + (f" and one of {c['big']}^2" if c["big"] else "")
        + f", 4-band uint16; MONAI UNet (TorchScript); roi {c['roi']}, overlap {c['overlap']}, gaussian, "
        f"batch {c['batch']}; geoseg workers {c['workers']}, "
        f"baseline/model-only torch threads {c['threads']}; "
        f"{env['cpu_count']} CPUs; medians of {c['repeats']} repeat(s); torch {env['torch']}, "
        f"ray {env['ray']}, monai {env['monai']}."
        + (" **Quick smoke run: sizes too small to judge the targets.**" if c["quick"] else "")
        + (" **Another Ray was running: figures are not reliable.**" if env["other_ray_at_start"] else ""),
        "",
        "| run | scenes | pixels | windows | end-to-end s | contender's own s | windows/s | "
        "peak PSS MiB | peak RSS-sum MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "model_only": "model-only (windows of 1 scene in memory)",
        "model_only_1t": "model-only, 1 torch thread (one actor's limit)",
        "baseline_small": "baseline (rasterio + MONAI SWI)",
        "geoseg_small": "geoseg run",
        "geoseg_one": "geoseg run, 1 scene (memory reference)",
        "baseline_big": "baseline, big scene",
        "geoseg_big": "geoseg run, big scene",
    }
    for kind in ("model_only", "model_only_1t", "baseline_small", "geoseg_small", "geoseg_one", "baseline_big",
                 "geoseg_big"):
        if kind not in s:
            continue
        r = s[kind]
        lines.append(
            f"| {names[kind]} | {r['scenes']} | {r['pixels'] / 1e6:.1f} M | {r['windows']} | "
            f"{_fmt(r['wall_s'])} | "
            f"{_fmt(r['inner_s'])} | {_fmt(r['windows_per_s'])} | {_fmt(r['peak_pss_mib'], 0)} | "
            f"{_fmt(r['peak_rss_sum_mib'], 0)} |"
        )
    mo = s.get("model_only", {}).get("windows_per_s")
    gk = [k for k in ("geoseg_small", "geoseg_one", "geoseg_big") if k in s and s[k].get("phases_s")]
    if gk:
        lines += [
            "",
            "Where geoseg's end-to-end time goes (seconds after launch, from its log, 1 s resolution):",
            "",
            "| geoseg run | Ray up, actors requested | first item planned (actors + model ready) | "
            "last item done | exit | inference phase windows/s | / model-only |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for kind in gk:
            ph, st = s[kind]["phases_s"], s[kind].get("steady_windows_per_s")
            lines.append(
                f"| {names[kind]} | {_fmt(ph.get('actors_requested'), 0)} | "
                f"{_fmt(ph.get('first_item_planned'), 0)} | {_fmt(ph.get('last_item_done'), 0)} | "
                f"{_fmt(ph.get('exit'), 1)} | {_fmt(st)} | {_fmt(st / mo if st and mo else None)} |"
            )
        lines += ["", "CPU seconds by process (first repeat; sampled every 0.2 s, so a process's last "
                  "0.2 s may be missing):", ""]
        for kind in gk + [k for k in ("baseline_small", "baseline_big") if k in s]:
            runs = [r for r in doc["runs"] if r["kind"] == kind]
            if runs and runs[0].get("cpu_by_process"):
                top = runs[0]["cpu_by_process"]
                total = sum(v for _, v in top)
                lines.append(f"- {names[kind]}: {total:.1f} CPU s in {runs[0]['wall_s']:.1f} s: "
                             + ", ".join(f"{n} {v:.1f}" for n, v in top[:7]))
    lines += ["", "| target | value | threshold | result |", "|---|---:|---:|---|"]
    for ch in doc["checks"]:
        res = "n/a" if ch["pass"] is None else ("PASS" if ch["pass"] else "FAIL")
        lines.append(f"| {ch['target']} | {_fmt(ch['value'], 3)} | {ch['op']} {ch['threshold']} | {res} |")
    lines.append("")
    one = s.get("model_only_1t", {}).get("windows_per_s")
    if one and mo:
        ideal = one * c["workers"]
        lines.append(
            f"- informational: model-only with 1 torch thread runs {one:.2f} windows/s, so {c['workers']} "
            f"single-thread actors could reach at most {ideal:.2f} windows/s "
            f"({ideal / mo:.2f} x model-only with {c['threads']} threads); geoseg reached "
            + ", ".join(f"{s[k]['windows_per_s'] / ideal:.2f} ({k})" for k in ("geoseg_small", "geoseg_big")
                        if k in s)
            + " of that end to end."
        )
    for key, ag in doc["agreement"].items():
        if "agreement" in ag:
            shares = ", ".join(f"{k}: {v:.3f}" for k, v in ag["baseline_class_shares"].items())
            lines.append(f"- label agreement geoseg vs baseline, {ag['scene']}: **{ag['agreement']:.6f}** "
                         f"of {ag['pixels']} pixels (baseline class shares {shares})")
        else:
            lines.append(f"- label agreement ({key}): {ag.get('error')}")
    lines += [
        "- end-to-end: wall time of the subprocess, from launch to exit (imports, Ray start-up, model load "
        "and output writing included); contender's own: the baseline's loop over scenes after imports, "
        "geoseg's reported job time, model-only's forward passes alone.",
        "- geoseg windows/s = windows / end-to-end time; peak PSS: max over 0.2 s samples of the summed PSS "
        "of the process tree and the run's Ray processes.",
        f"- memory sampling: every {c['sample_every_s']} s, exact PSS every {c['pss_every_s']} s (in between "
        "carried forward by RSS changes); the sampler itself used "
        f"{sum(r['sampler_cpu_s'] for r in doc['runs']):.1f} CPU s over "
        f"{sum(r['wall_s'] for r in doc['runs']):.0f} s of runs.",
        f"- total benchmark time {doc['total_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------



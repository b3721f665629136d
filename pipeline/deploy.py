"""Phase 3, deploy files: the template's files, rendered from the variables,
uploaded over one SSH session with their mode, owner and policy; files whose
checksum already matches are skipped."""

from __future__ import annotations

from pipeline.context import Context
from pipeline.scripts import script_specs
from provisioner.templates.render import render_files


async def run(ctx: Context) -> None:
    specs = render_files(ctx.template, ctx.variables)
    ctx.step(f"deploying {len(specs)} file(s)", 0.1)
    session = await ctx.ssh()
    # the scripts travel in the same batch: one round trip instead of two
    results = await session.upload([*specs, *script_specs(ctx)])
    results = results[: len(specs)]
    ctx.scripts_uploaded = True
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
        note = f" (old one kept as {result.backup})" if result.backup else ""
        ctx.log(f"{result.status.value:<18} {result.path}{note}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    ctx.step(f"files deployed: {summary}", 1.0)

"""Plots of the Frozen/Flamingo experiment: fast-binding accuracy against inner-shots for every
model beside the text-only ceiling and chance (Frozen Table 3's rows as lines), one panel per
condition; and the learning curves of the LM (text binding, plays loss) and of the vision sides
(held-out caption loss)."""

from __future__ import annotations

from pathlib import Path

from engramlab.engine.plots import color, learning_curves, plt, save

ORDER = ["text", "frozen", "frozen-vq", "flamingo", "finetuned", "blind", "scratch", "prototype", "smollm2-text",
         "smollm2"]  # fmt: skip
LABELS = {
    "text": "text-only ceiling (LM, class words)",
    "smollm2-text": "SmolLM2-135M text-only ceiling",
    "smollm2": "Frozen on SmolLM2-135M",
    "frozen-vq": "frozen, prefix quantized to LM words (ours)",
    "prototype": "nearest prototype (CNN features)",
}


def all_plots(cfg, metrics: dict[str, float], run_dir: Path, out_dir: Path) -> list[Path]:
    paths = [accuracy_vs_shots(cfg, metrics, out_dir / "binding-vs-shots.png")]
    if cfg.needs_own_lm:
        paths.append(learning_curves(
            run_dir, ["lm"],
            [("text-only binding, 2-way (held-out nonce)", [("eval/text_2way_1shot_accuracy", "-", " 1 shot"),
                                                           ("eval/text_2way_5shot_accuracy", "--", " 5 shots")]),
             ("plays: next-word loss", [("eval/plays_loss", "-", "")])],
            out_dir / "lm-curves.png",
        ))  # fmt: skip
    arms = [f"{kind}-seed{cfg.seeds[0]}" for kind in cfg.kinds]
    if not arms:
        return paths
    paths.append(
        learning_curves(
            run_dir, arms,
            [("held-out caption loss", [("eval/caption_loss", "-", "")]),
             ("held-out caption accuracy (digit word)", [("eval/caption_accuracy", "-", "")])],
            out_dir / "caption-curves.png",
        )
    )  # fmt: skip
    return paths


def accuracy_vs_shots(cfg, metrics: dict[str, float], path: Path) -> Path:
    """One panel per condition that has a number; a model measured at some shot counts only (the
    smollm2 arm) is drawn at those."""
    panels = [(f"nonce/{w}way", True, f"{w}-way, task induction") for w in cfg.eval.ways]
    panels += [(f"nonce/{w}way", False, f"{w}-way, no task induction") for w in cfg.eval.ways]
    panels += [("real-names/2way", True, "2-way, real names")]
    panels += [("held-out-classes/2way", True, "2-way, held-out classes")]
    measured = lambda prefix, induction: any(  # noqa: E731
        key.startswith(f"{kind}/{prefix}/") and key.endswith("shot" if induction else "shot/no-induction")
        for key in metrics
        for kind in ORDER
    )
    panels = [panel for panel in panels if measured(*panel[:2])]
    fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(4.2 * ((len(panels) + 1) // 2), 7), squeeze=False)
    shots = cfg.eval.shots
    for ax, (prefix, induction, title) in zip(axes.flatten(), panels):
        ways = int(prefix.split("/")[1].removesuffix("way"))
        suffix = "" if induction else "/no-induction"
        for i, kind in enumerate(ORDER):
            if kind == "prototype":  # measured on the nonce episodes with induction only
                if not (prefix.startswith("nonce") and induction):
                    continue
                keys = [f"prototype/{ways}way/{s}shot" for s in shots]
            else:
                keys = [f"{kind}/{prefix}/{s}shot{suffix}" for s in shots]
            drawn = [(s, key) for s, key in zip(shots, keys) if key in metrics]
            if not drawn:
                continue
            values = [metrics[key] for _, key in drawn]
            errors = [metrics.get(key + "/std", 0.0) for _, key in drawn]
            style = "--" if kind in ("text", "prototype", "smollm2-text") else "-"
            ax.errorbar([s for s, _ in drawn], values, yerr=errors, fmt=style + "o", color=color(kind, i),
                        label=LABELS.get(kind, kind), capsize=3, lw=1.4, ms=4)  # fmt: skip
        ax.axhline(100 / ways, color="grey", lw=1, ls=":", label="chance")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("inner-shots")
        ax.set_ylabel("exact match (%)")
        ax.set_xticks(shots)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    for ax in axes.flatten()[len(panels) :]:
        ax.axis("off")
    axes.flatten()[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Fast concept binding (mean over seeds, bars: std over seeds)")
    fig.tight_layout()
    return save(fig, path)


def episode_figure(images, captions: list[str], prompt: str, answer: str, truth: str, path: Path) -> Path:
    """One episode as the model saw it: each image with the text that follows it, and the
    model's greedy answer to the last one beside the right answer."""
    fig, axes = plt.subplots(1, len(images), figsize=(1.9 * len(images), 2.8), squeeze=False)
    for ax, image, caption in zip(axes[0], images, captions):
        ax.imshow(image.squeeze(0).numpy(), cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=8, wrap=True)
    # under the query image, on lines of their own, so that a long answer is not cut at the figure's edge
    mark = "right" if answer == truth else f"wrong: the answer is '{truth}'"
    query = axes[0][-1]
    query.set_xlabel(f"{captions[-1]}\nmodel: '{answer}'\n({mark})".lstrip("\n"), fontsize=8)
    query.xaxis.label.set_color("green" if answer == truth else "red")
    fig.suptitle(prompt, fontsize=9)
    fig.tight_layout()
    return save(fig, path)

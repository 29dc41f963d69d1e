"""Propose the Simon-Says hold frames of a tracked take, for a person to check (conf/label_simon_says.yaml).

    python -m experiments.label_simon_says input=output/actor tracked_by=auto control_set=metahuman output=actor.yaml

Reads the tracker's output (:func:`flamejax.io.read_tracked`), proposes each expression's hold
(:func:`flamejax.holds.propose_holds`: the plateau of each prompt's motion; Neutral in the
quiet before the first prompt), writes the labels file (:func:`flamejax.io.labels.write_labels`,
headed by a comment saying it is a proposal to check) and prints a per-expression table:
frames, lost frames left out, frame-id range, peak and plateau motion. Exit status 1, with the
proposer's message, when the take's motion does not split into the prompts; 2 for a bad config.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from flamejax.holds import HoldProposalError, proposal_table, propose_holds
from flamejax.io import FlameFileError, read_tracked
from flamejax.io.labels import write_labels
from flamejax.semantic import load_control_set
from flamejax.semantic.controls import ControlSetError


def run(cfg: dict, out_dir: Path) -> tuple[Path, str]:
    """Propose, write the labels file -> (its path, the summary table)."""
    controls = load_control_set(cfg["control_set"])
    seq = read_tracked(cfg["input"], tracker=cfg["tracked_by"])
    proposal = propose_holds(seq.expression, seq.jaw_pose, seq.valid, controls, order=cfg["order"],
                             fps=float(cfg["fps"]), **cfg["proposer"])
    output = Path(cfg["output"]) if cfg["output"] else out_dir / "labels.yaml"
    output.parent.mkdir(parents=True, exist_ok=True)
    lost = int((~seq.valid).sum())
    comment = (f"PROPOSAL, to check against the video before calibrating: made by flamejax.holds.propose_holds\n"
               f"from {seq.source} ({seq.n_frames} frames, {lost} lost by the tracker and never labelled).\n"
               f"A hold is the expression fully held: move a range's ends off the ramps, split it around a\n"
               f"blink or a glance away, or delete an expression that was not performed.")
    write_labels(output, proposal.hold, seq.frame_ids, controls, comment=comment)
    return output, proposal_table(proposal, controls, seq.frame_ids)


@hydra.main(config_path="../conf", config_name="label_simon_says", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    cfg = OmegaConf.to_container(dcfg, resolve=True)
    try:
        output, table = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (FlameFileError, ControlSetError, ValueError, TypeError) as e:
        # TypeError: a proposer key propose_holds does not have; HoldProposalError is a ValueError
        kind = "cannot propose holds" if isinstance(e, (HoldProposalError, FlameFileError)) else "bad config"
        print(f"label_simon_says: {kind}: {e}", file=sys.stderr)
        sys.exit(1 if kind == "cannot propose holds" else 2)
    print(table)
    print(f"wrote the proposed holds to {output}: check them against the video before calibrating")


if __name__ == "__main__":
    main()

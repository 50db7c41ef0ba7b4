"""The package's own methods, registered as any other would be (:func:`register_method`): the
paper's four (ROME, MEMIT, KN, MEND), then the later ones it compares with RECT — r-ROME (ROME with
consistent keys) and AlphaEdit (MEMIT projected onto the preserved keys' null space)."""
from __future__ import annotations

from .registry import MethodSpec, register_method

# 4: the methods that sample context templates or read key statistics read both off the unedited
# model also when a sequence resumes from stored edited weights in a new process (revision 3
# sampled them from the edited weights there). 3: the methods as the paper's code computes them.
READ_AHEAD_REVISION = 4
# 5 (MEMIT), 4 (MEND): a batch is edited as the released editor edits it (chunks of batch_size in sequence)
# unless the hparams say batch_edit: joint; revision 4 and 3 edited every batch jointly.
BATCH_AS_RELEASED_REVISION = {"MEMIT": 5, "MEND": 4}
# 5 (MEND): its network trained on the reference trainer's schedule (epochs, validation, early stopping),
# the best-validation network kept
MEND_TRAINING_REVISION = 5
# 5 (R-ROME): its context templates sampled as its authors' code samples them (kmeng01/rome's recipe)
R_ROME_TEMPLATES_REVISION = 5
# the target's leading space as each reference adds it (targets.target_text): ROME 5, MEMIT 6, R-ROME 6, AlphaEdit 5
TARGET_SPACE_REVISION = {"ROME": 5, "MEMIT": 6, "R-ROME": 6, "AlphaEdit": 5}


def specs() -> list[MethodSpec]:
    from . import alphaedit, kn, memit, mend, rome

    return [
        MethodSpec("ROME", rome.ROMEHyperParams, rome.apply, rome.apply_each, rome.prepare,
                   revision=TARGET_SPACE_REVISION["ROME"]),
        MethodSpec("MEMIT", memit.MEMITHyperParams, memit.apply, memit.apply_each, memit.prepare, batchable=True,
                   revision=TARGET_SPACE_REVISION["MEMIT"]),
        MethodSpec("KN", kn.KNHyperParams, kn.apply),
        MethodSpec("MEND", mend.MENDHyperParams, mend.apply, batchable=True, new_state=mend.SequenceStatistics,
                   editable=mend.editable_records, revision=MEND_TRAINING_REVISION),
        MethodSpec("R-ROME", rome.RROMEHyperParams, rome.apply, rome.apply_each, rome.prepare,
                   revision=TARGET_SPACE_REVISION["R-ROME"], base="ROME"),
        MethodSpec("AlphaEdit", alphaedit.AlphaEditHyperParams, alphaedit.apply, prepare=alphaedit.prepare,
                   batchable=True, new_state=alphaedit.EarlierKeys, revision=TARGET_SPACE_REVISION["AlphaEdit"], base="MEMIT"),
    ]


def register() -> None:
    for spec in specs():
        register_method(spec)
    # the rescues of 2025-26, each one file that registers itself as a user's method would
    from . import encore, nas

    encore.register()
    nas.register()


__all__ = ["specs", "register", "READ_AHEAD_REVISION", "BATCH_AS_RELEASED_REVISION"]

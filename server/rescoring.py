"""Rescoring every stored submission of some tracks (`c2seg admin rescore`, `c2seg serve --rescore`).

When the labels differ from the recorded ones, or the split moves to a new seed, the new scores
are kept until every submission is done and committed in one transaction with the new labels'
sha256 (and the new split): the board never shows scores of two label versions or two splits
side by side, and a failure changes nothing. Uploads that a running server commits meanwhile
are rescored too; from that commit on, such a server refuses to score (stored.basis_change).
With the recorded labels and split, each submission is committed as it is done (the scores
stay the same; this fills in what older releases did not compute, e.g. the content hash).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from c2seg_kit.errors import C2SegError
from c2seg_kit.text import for_terminal as safe

from . import crud, stored


@dataclass
class Rescored:
    done: int
    failed: int
    new_labels: list[str]  # the tracks whose recorded labels changed


def rescore_all(settings, sessions, tracks: dict, *, new_split_seed: bool = False, progress: bool = False,
                say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Rescored:
    """Rescore the stored submissions of `tracks` (main.served_tracks) against their labels, on the
    recorded split (or a new secret one). `say` gets one line per submission that failed."""
    from tqdm import tqdm

    from .main import make_pool
    from .workers import InvalidUpload, ScoringFailed

    digests = {t: stored.file_sha256(path) for t, (_, path) in tracks.items()}
    layouts = {t: served.layout for t, (served, _) in tracks.items()}
    with sessions() as s:
        split = stored.record_split(s, settings)
        new_labels = sorted(stored.changed_labels(s, digests))
    if new_split_seed:
        split = stored.Split(seed=stored.new_seed(), block=split.block, fraction=split.fraction, origin="secret")
    at_once = new_split_seed or bool(new_labels)
    done, failed, fresh = 0, 0, {}
    with make_pool(settings, tracks, split) as pool, sessions() as s:
        def score(sub):
            path = settings.storage_dir / sub.stored_as
            if not path.is_file():
                raise ScoringFailed(f"stored file missing: {path} (is the data folder right?)")
            return pool.call("score", str(path), sub.track)

        def waiting():
            return [x for x in crud.all_submissions(s) if x.track in tracks and x.id not in fresh]

        for sub in tqdm(waiting(), desc="rescoring", unit="sub", file=sys.stderr, disable=not progress):
            try:
                scores = score(sub)
            except (InvalidUpload, ScoringFailed) as e:
                failed += 1
                say(f"submission {sub.id}: not rescored: {safe(e)}")
                continue
            if at_once:  # kept until every one is done
                fresh[sub.id] = (sub, scores)
            else:
                crud.set_scores(s, sub, scores)
                s.commit()
            done += 1
        if at_once and failed:
            raise C2SegError(f"{failed} submission(s) could not be rescored: nothing was changed")
        if at_once:
            # Uploads a running server committed meanwhile: rescored before the new labels are
            # written, and again after (rare), once the written rows hold off further ones.
            for last in (False, True):
                if last:
                    stored.record_labels(s, digests, layouts)
                    if new_split_seed:
                        stored.write_split(s, split)
                for sub in waiting():
                    try:
                        fresh[sub.id] = (sub, score(sub))
                    except (InvalidUpload, ScoringFailed) as e:
                        raise C2SegError(f"submission {sub.id}, uploaded during the rescore, could not be "
                                         f"rescored ({safe(e)}): nothing was changed") from None
                    done += 1
            for sub, scores in fresh.values():
                crud.set_scores(s, sub, scores)
            s.commit()  # the scores, the labels' sha256 and the split, together
    return Rescored(done=done, failed=failed, new_labels=new_labels)

"""Prune a face set by hand in a notebook: a grid of thumbnails, worst-ranked first, click to exclude.

The widget only edits a selection (which of the shown faces should be excluded); ``apply`` writes the
difference to the face set through ``FaceSet.exclude``/``include``. All of that state lives in plain Python,
so it is tested without a browser; ipywidgets is imported only when the grid is built. After applying, call
``trainer.reload_faces()`` so training continues without the excluded faces and the log marks the change.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from facesynth.errors import ConfigError
from facesynth.extract.faceset import FaceSet
from facesynth.swap.prune import rank_faces

__all__ = ["PruneWidget"]

_CAPTIONS = {"loss": "loss {:.4f}", "blur": "blur {:.0f}", "yaw": "yaw {:+.0f}°", "pitch": "pitch {:+.0f}°",
             "confidence": "conf {:.2f}"}


class PruneWidget:
    """Faces of ``faceset`` in a clickable grid, worst first by ``rank_faces``; "apply" saves the exclusions.

    Args:
        faceset: a face-set folder or a FaceSet (re-read from disk either way, for the latest training losses).
            Excluded faces are shown too (pre-selected), so they can be brought back.
        by, weights: ranking terms and weights, as for ``rank_faces``.
        max_faces: show at most this many faces (the worst ones).
        cols: thumbnails per row. thumb: thumbnail side in pixels.

    State without a browser: ``shown`` (ids in display order), ``badness``, ``selected`` (ids marked for
    exclusion), ``toggle(id)``, ``mark(ids, excluded)``, ``pending()`` and ``apply()``.

    Example:
        >>> w = PruneWidget("work/A"); w          # doctest: +SKIP   (click faces, then "apply")
        >>> trainer.reload_faces()                # doctest: +SKIP
    """

    def __init__(self, faceset: FaceSet | str | os.PathLike, by: Sequence[str] = ("loss", "blur", "yaw", "pitch",
                 "confidence"), weights: dict[str, float] | None = None, max_faces: int = 48, cols: int = 6,
                 thumb: int = 96):
        self.faceset = FaceSet.open(faceset.root if isinstance(faceset, FaceSet) else faceset)   # current scores
        ranked = rank_faces(self.faceset, by=by, weights=weights, excluded=True)[:max_faces]
        self.shown: list[int] = [fid for fid, _ in ranked]
        self.badness: dict[int, float] = dict(ranked)
        self.selected: set[int] = {fid for fid in self.shown if self.faceset.get(fid).excluded}
        self.cols, self.thumb = cols, thumb
        self._widget = None
        self._toggles: dict[int, object] = {}
        self._status = None

    # --- state ---------------------------------------------------------------------------------------------
    def toggle(self, face_id: int) -> bool:
        """Flip a shown face between keep and exclude; returns whether it is now marked excluded."""
        self.mark([face_id], face_id not in self.selected)
        return face_id in self.selected

    def mark(self, ids: Iterable[int], excluded: bool = True) -> None:
        """Mark shown faces as to be excluded (or kept)."""
        for fid in ids:
            fid = int(fid)
            if fid not in self.badness:
                raise ConfigError(f"face {fid} is not shown in this widget (shown: {len(self.shown)} faces)")
            (self.selected.add if excluded else self.selected.discard)(fid)
            toggle = self._toggles.get(fid)
            if toggle is not None and toggle.value != excluded:
                toggle.value = excluded                # keeps the grid in step when driven from code

    def pending(self) -> tuple[list[int], list[int]]:
        """``(to_exclude, to_include)``: what ``apply`` would change, against the face set as it is on disk."""
        return self._diff(_reopen(self.faceset))

    def apply(self) -> tuple[list[int], list[int]]:
        """Save the selection: exclude and include faces; returns ``(excluded, included)`` ids.

        The face set is re-read from disk first, so per-face losses a trainer wrote since the widget was
        built are kept. Raises ConfigError (changing nothing) if every face would end up excluded.
        """
        fresh = _reopen(self.faceset)
        to_exclude, to_include = self._diff(fresh)
        remaining = {f.id for f in fresh if not f.excluded} - set(to_exclude) | set(to_include)
        if not remaining:
            raise ConfigError(f"{fresh.root}: this selection excludes every face; keep some to train on")
        if to_include:
            fresh.include(to_include)
        if to_exclude:
            fresh.exclude(to_exclude)
        self.faceset = fresh
        return to_exclude, to_include

    def _diff(self, on_disk: FaceSet) -> tuple[list[int], list[int]]:
        excluded_now = {f.id for f in on_disk if f.excluded}
        return sorted(self.selected - excluded_now), sorted((set(self.shown) - self.selected) & excluded_now)

    # --- the grid ------------------------------------------------------------------------------------------
    @property
    def widget(self):
        """The ipywidgets grid (built on first use)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _build(self):
        import ipywidgets as W

        tiles = []
        for fid in self.shown:
            face = self.faceset.get(fid)
            caption = " · ".join([f"#{fid} bad {self.badness[fid]:.2f}"] + [
                fmt.format(face.scores[k]) for k, fmt in _CAPTIONS.items() if k in face.scores][:3])
            marked = fid in self.selected
            # the tooltip names the face, so a person hovering (and a browser test) can tell which face a button is
            toggle = W.ToggleButton(value=marked, description="excluded" if marked else "keep", tooltip=f"face {fid}",
                                    button_style="danger" if marked else "", layout=W.Layout(width=f"{self.thumb}px"))
            toggle.observe(self._on_toggle(fid), names="value")
            self._toggles[fid] = toggle
            image = W.Image(value=_png(face.image, self.thumb), format="png",
                            layout=W.Layout(width=f"{self.thumb}px", height=f"{self.thumb}px"))
            label = W.HTML(f"<div style='font-size:9px;line-height:1.1;width:{self.thumb}px'>{caption}</div>")
            tiles.append(W.VBox([image, label, toggle], layout=W.Layout(border=_border(marked))))
        grid = W.GridBox(tiles, layout=W.Layout(grid_template_columns=f"repeat({self.cols}, {self.thumb + 12}px)"))
        button = W.Button(description="apply", button_style="danger", icon="check")
        self._status = W.HTML(self._status_text())
        button.on_click(lambda _: self._on_apply())
        return W.VBox([W.HTML(f"<b>{self.faceset.root}</b>: worst-ranked faces first; click a face's button to "
                              f"exclude it, then apply"), grid, W.HBox([button, self._status])])

    def _on_toggle(self, fid: int):
        def handler(change) -> None:
            excluded = bool(change["new"])
            (self.selected.add if excluded else self.selected.discard)(fid)
            toggle = self._toggles[fid]
            toggle.description = "excluded" if excluded else "keep"
            toggle.button_style = "danger" if excluded else ""
            self._widget_tile(fid).layout.border = _border(excluded)
            if self._status is not None:
                self._status.value = self._status_text()
        return handler

    def _on_apply(self) -> None:
        try:
            excluded, included = self.apply()
        except ConfigError as e:
            self._status.value = f"<span style='color:crimson'>{e}</span>"
            return
        self._status.value = (f"excluded {len(excluded)}, included {len(included)}; {len(self.faceset.active())} "
                              f"faces active. A running trainer needs <code>trainer.reload_faces()</code>.")

    def _widget_tile(self, fid: int):
        return self.widget.children[1].children[self.shown.index(fid)]

    def _status_text(self) -> str:
        to_exclude, to_include = self.pending()
        return f"pending: exclude {len(to_exclude)}, include {len(to_include)}"


def _reopen(faceset: FaceSet) -> FaceSet:
    return FaceSet.open(faceset.root)


def _border(excluded: bool) -> str:
    return "3px solid crimson" if excluded else "3px solid transparent"


def _png(image: np.ndarray, side: int) -> bytes:
    import cv2

    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".png", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return data.tobytes()

"""Column-wise event tables shared by SMC, CVD divergences and order-flow absorption.

Events are stored as numpy columns rather than one Python object per event: a 100 000-bar run yields tens of
thousands of events and building objects would dominate the run time. ``to_dict`` materialises JSON rows.

Every row carries ``kind``, ``direction``, ``anchor_time`` (open time of the bar the event refers to),
``confirmed_time`` (close time of the bar that made it knowable), a ``level`` or a zone ``top``/``bottom``, and the
lifecycle times ``mitigated_time``, ``broken_time``, ``swept_time`` (close times, ``None`` until they happen).
``status`` is derived from the lifecycle: broken, else swept, else mitigated, else active.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.analytics.rangequery import NOT_FOUND
from app.analytics.types import FloatArray, IntArray, json_floats

NO_TIME = -1
Row = dict[str, Any]

ACTIVE, MITIGATED, SWEPT, BROKEN = "active", "mitigated", "swept", "broken"


@dataclass(frozen=True, slots=True, eq=False)
class EventTable:
    kinds: tuple[str, ...]
    direction_names: tuple[str, str]  # names for direction +1 and -1
    zone: bool  # True: rows carry top/bottom; False: rows carry a single level (stored in top)
    kind: NDArray[np.int8]
    direction: NDArray[np.int8]
    anchor_index: IntArray  # positions are kept for downstream modules and never serialised
    confirmed_index: IntArray
    anchor_time: IntArray
    confirmed_time: IntArray
    top: FloatArray
    bottom: FloatArray
    mitigated_time: IntArray
    broken_time: IntArray
    swept_time: IntArray
    extra: Mapping[str, FloatArray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def select(self, rows: NDArray[Any]) -> EventTable:
        return EventTable(
            kinds=self.kinds,
            direction_names=self.direction_names,
            zone=self.zone,
            kind=self.kind[rows],
            direction=self.direction[rows],
            anchor_index=self.anchor_index[rows],
            confirmed_index=self.confirmed_index[rows],
            anchor_time=self.anchor_time[rows],
            confirmed_time=self.confirmed_time[rows],
            top=self.top[rows],
            bottom=self.bottom[rows],
            mitigated_time=self.mitigated_time[rows],
            broken_time=self.broken_time[rows],
            swept_time=self.swept_time[rows],
            extra={name: column[rows] for name, column in self.extra.items()},
        )

    def as_of(self, time: int) -> EventTable:
        """What a run that stopped at ``time`` knew: later events dropped, later lifecycle times unset."""
        known = self.select(self.confirmed_time <= time)

        def unset_after(times: IntArray) -> IntArray:
            return np.where(times > time, NO_TIME, times)

        return EventTable(
            kinds=known.kinds,
            direction_names=known.direction_names,
            zone=known.zone,
            kind=known.kind,
            direction=known.direction,
            anchor_index=known.anchor_index,
            confirmed_index=known.confirmed_index,
            anchor_time=known.anchor_time,
            confirmed_time=known.confirmed_time,
            top=known.top,
            bottom=known.bottom,
            mitigated_time=unset_after(known.mitigated_time),
            broken_time=unset_after(known.broken_time),
            swept_time=unset_after(known.swept_time),
            extra=known.extra,
        )

    def status(self) -> NDArray[np.str_]:
        return np.where(
            self.broken_time != NO_TIME,
            BROKEN,
            np.where(self.swept_time != NO_TIME, SWEPT, np.where(self.mitigated_time != NO_TIME, MITIGATED, ACTIVE)),
        )

    def active(self) -> NDArray[np.bool_]:
        """Rows neither broken nor swept (mitigated zones still count: they may be revisited)."""
        result: NDArray[np.bool_] = (self.broken_time == NO_TIME) & (self.swept_time == NO_TIME)
        return result

    def to_dict(self) -> list[Row]:
        kinds = np.array(self.kinds, dtype=object)[self.kind].tolist()
        directions = np.where(self.direction > 0, self.direction_names[0], self.direction_names[1]).tolist()

        def optional_times(times: IntArray) -> list[int | None]:
            values: NDArray[Any] = times.astype(object)
            values[times == NO_TIME] = None
            result: list[int | None] = values.tolist()
            return result

        none_column: list[None] = [None] * len(self)
        top = json_floats(self.top)
        columns: dict[str, list[Any]] = {
            "kind": kinds,
            "direction": directions,
            "anchor_time": self.anchor_time.tolist(),
            "confirmed_time": self.confirmed_time.tolist(),
            "level": none_column if self.zone else top,
            "top": top if self.zone else none_column,
            "bottom": json_floats(self.bottom) if self.zone else none_column,
            "mitigated_time": optional_times(self.mitigated_time),
            "broken_time": optional_times(self.broken_time),
            "swept_time": optional_times(self.swept_time),
            "status": self.status().tolist(),
        }
        for name, column in self.extra.items():
            columns[name] = json_floats(column)
        names = list(columns)
        return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def build_events(
    *,
    close_time: IntArray,
    open_time: IntArray,
    kinds: tuple[str, ...],
    direction_names: tuple[str, str],
    zone: bool,
    kind: NDArray[Any] | int,
    direction: NDArray[Any] | int,
    anchor_index: IntArray,
    confirmed_index: IntArray,
    top: FloatArray,
    bottom: FloatArray | None = None,
    mitigated_index: IntArray | None = None,
    broken_index: IntArray | None = None,
    swept_index: IntArray | None = None,
    extra: Mapping[str, FloatArray] | None = None,
) -> EventTable:
    """Convert bar positions to times and sort rows by confirmation, then anchor, then kind and direction."""
    count = int(np.asarray(anchor_index).shape[0])

    def lifecycle(indexes: IntArray | None) -> IntArray:
        if indexes is None:
            return np.full(count, NO_TIME, dtype=np.int64)
        indexes = np.asarray(indexes, dtype=np.int64)
        return np.where(indexes == NOT_FOUND, NO_TIME, close_time[np.maximum(indexes, 0)])

    kind8 = np.broadcast_to(np.asarray(kind, dtype=np.int8), (count,))
    direction8 = np.broadcast_to(np.asarray(direction, dtype=np.int8), (count,))
    anchor = np.asarray(anchor_index, dtype=np.int64)
    confirmed = np.asarray(confirmed_index, dtype=np.int64)
    order = np.lexsort((direction8, kind8, anchor, confirmed))
    table = EventTable(
        kinds=kinds,
        direction_names=direction_names,
        zone=zone,
        kind=np.ascontiguousarray(kind8),
        direction=np.ascontiguousarray(direction8),
        anchor_index=anchor,
        confirmed_index=confirmed,
        anchor_time=open_time[anchor],
        confirmed_time=close_time[confirmed],
        top=np.asarray(top, dtype=np.float64),
        bottom=np.asarray(top if bottom is None else bottom, dtype=np.float64),
        mitigated_time=lifecycle(mitigated_index),
        broken_time=lifecycle(broken_index),
        swept_time=lifecycle(swept_index),
        extra=dict(extra or {}),
    )
    return table.select(order)

"""Sky regions: convex spherical polygons given by (ra, dec) vertices in degrees.

Overlap tests use `spherical_geometry` (STScI, maintained, pure great-circle
geometry); a bounding-cone test discards far-apart pairs first so most pairs
never reach the exact test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import DimensionError


def _unit_vectors(vertices: np.ndarray) -> np.ndarray:
    ra = np.radians(vertices[:, 0])
    dec = np.radians(vertices[:, 1])
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


@dataclass(frozen=True)
class Region:
    """A convex spherical polygon.

    Parameters
    ----------
    vertices
        ``(ra, dec)`` pairs in degrees, in order around the polygon.
    """

    vertices: tuple[tuple[float, float], ...]

    @classmethod
    def from_vertices(cls, vertices: Sequence[Sequence[float]]) -> Region:
        verts = tuple((float(ra), float(dec)) for ra, dec in vertices)
        if len(verts) < 3:
            raise DimensionError(f"A sky region needs at least 3 vertices, got {len(verts)}")
        for _ra, dec in verts:
            if not -90.0 <= dec <= 90.0:
                raise DimensionError(f"Region vertex dec={dec} is outside [-90, 90]")
        return cls(verts)

    @classmethod
    def from_json(cls, text: str) -> Region:
        return cls.from_vertices(json.loads(text))

    def to_json(self) -> str:
        return json.dumps([list(v) for v in self.vertices])

    @cached_property
    def _cone(self) -> tuple[np.ndarray, float]:
        vecs = _unit_vectors(np.asarray(self.vertices))
        center = vecs.sum(axis=0)
        center /= np.linalg.norm(center)
        radius = float(np.max(np.arccos(np.clip(vecs @ center, -1.0, 1.0))))
        return center, radius

    @cached_property
    def _polygon(self):  # type: ignore[no-untyped-def]
        from spherical_geometry.polygon import SphericalPolygon

        ra, dec = zip(*self.vertices, strict=True)
        center, _ = self._cone
        c_ra = float(np.degrees(np.arctan2(center[1], center[0])))
        c_dec = float(np.degrees(np.arcsin(center[2])))
        return SphericalPolygon.from_radec(list(ra), list(dec), center=(c_ra, c_dec), degrees=True)

    def overlaps(self, other: Region) -> bool:
        """Whether the two regions share any area (touching edges or corners do not count)."""
        (c1, r1), (c2, r2) = self._cone, other._cone
        if np.arccos(np.clip(c1 @ c2, -1.0, 1.0)) > r1 + r2 + 1e-12:
            return False
        return bool(self._polygon.overlap(other._polygon) > 1e-9)


def overlapping_pairs(left: Sequence[Region], right: Sequence[Region]) -> list[tuple[int, int]]:
    """Indices ``(i, j)`` of every overlapping pair, cone-filtered with numpy first."""
    if not left or not right:
        return []
    lc = np.array([r._cone[0] for r in left])
    lr = np.array([r._cone[1] for r in left])
    rc = np.array([r._cone[0] for r in right])
    rr = np.array([r._cone[1] for r in right])
    sep = np.arccos(np.clip(lc @ rc.T, -1.0, 1.0))
    candidates = np.argwhere(sep <= lr[:, None] + rr[None, :] + 1e-12)
    return [(int(i), int(j)) for i, j in candidates if left[i].overlaps(right[j])]

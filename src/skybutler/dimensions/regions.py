"""Sky shapes: convex spherical polygons (`Region`), circles (`Circle`) and points (`Point`).

Every shape answers ``overlaps(other)`` for every other shape, with one
meaning throughout: the two share an interior point.  Shapes that only touch
(a common edge, a corner, a point on an edge) do not overlap, so a point
overlaps a shape only when it is strictly inside it, and two points never
overlap.

Polygon-polygon tests use `spherical_geometry` (STScI, maintained, pure
great-circle geometry).  Circles are exact cones, not polygons: a circle
overlaps a polygon when its centre is inside it or its centre is closer to the
polygon's boundary than its radius, which is a few dot products, where a
polygon approximation would both cost more and add or drop slivers at the
rim.  A bounding-cone test (every shape has one; a circle *is* one) discards
far-apart pairs first, so most pairs never reach an exact test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import DimensionError

# Angles below this (radians, about 2e-8 arcsec) count as zero: "touching" in floating point.
_EPSILON = 1e-13


def _unit_vectors(vertices: np.ndarray) -> np.ndarray:
    """Unit vectors of ``(..., 2)`` arrays of (ra, dec) degrees, as ``(..., 3)``."""
    ra = np.radians(vertices[..., 0])
    dec = np.radians(vertices[..., 1])
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _bounding_cones(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(..., 3)`` and radii ``(...)`` of the cones around ``(..., n, 3)`` polygon vertices."""
    centers = vectors.sum(axis=-2)
    centers /= np.linalg.norm(centers, axis=-1, keepdims=True)
    radii = np.max(np.arccos(np.clip(np.einsum("...nd,...d->...n", vectors, centers), -1.0, 1.0)), axis=-1)
    return centers, radii


def _unit_vector(ra: float, dec: float) -> np.ndarray:
    return _unit_vectors(np.array([[ra, dec]]))[0]


def _separation(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two unit vectors, in radians (atan2 form: accurate for tiny and large angles)."""
    return float(np.arctan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b)))


def _check_position(what: str, ra: float, dec: float) -> tuple[float, float]:
    ra, dec = float(ra), float(dec)
    if not (math.isfinite(ra) and math.isfinite(dec)):
        raise DimensionError(f"{what} has a position that is not a finite number: ra={ra}, dec={dec}")
    if not -90.0 <= dec <= 90.0:
        raise DimensionError(f"{what} has dec={dec}, outside [-90, 90]")
    return ra, dec


@dataclass(frozen=True)
class Point:
    """A position on the sky.

    Parameters
    ----------
    ra, dec
        Degrees.
    """

    ra: float
    dec: float

    @classmethod
    def from_degrees(cls, ra: float, dec: float) -> Point:
        """A point, its position checked (``DimensionError`` for dec outside [-90, 90] or NaN)."""
        return cls(*_check_position("A point", ra, dec))

    @cached_property
    def _vector(self) -> np.ndarray:
        return _unit_vector(self.ra, self.dec)

    @cached_property
    def _cone(self) -> tuple[np.ndarray, float]:
        return self._vector, 0.0

    def overlaps(self, other: Shape) -> bool:
        """Whether this point is strictly inside ``other`` (never true for another point)."""
        if isinstance(other, Point):
            return False
        return other.overlaps(self)


@dataclass(frozen=True)
class Circle:
    """A cone: every position closer than ``radius`` to the centre.

    Parameters
    ----------
    ra, dec
        Centre, degrees.
    radius
        Angular radius in degrees, ``0 < radius <= 180``.
    """

    ra: float
    dec: float
    radius: float

    @classmethod
    def from_degrees(cls, ra: float, dec: float, radius: float) -> Circle:
        """A circle, its values checked (``DimensionError`` when they describe none)."""
        ra, dec = _check_position("A circle", ra, dec)
        radius = float(radius)
        if not 0.0 < radius <= 180.0:
            raise DimensionError(f"A circle's radius must be in (0, 180] degrees, got {radius}")
        return cls(ra, dec, radius)

    @cached_property
    def _cone(self) -> tuple[np.ndarray, float]:
        return _unit_vector(self.ra, self.dec), math.radians(self.radius)

    def overlaps(self, other: Shape) -> bool:
        """Whether the circle and ``other`` share an interior point."""
        center, radius = self._cone
        if isinstance(other, Point):
            return _separation(center, other._vector) < radius - _EPSILON
        if isinstance(other, Circle):
            other_center, other_radius = other._cone
            return _separation(center, other_center) < radius + other_radius - _EPSILON
        return other.overlaps(self)


@dataclass(frozen=True)
class Region:
    """A convex spherical polygon (smaller than a hemisphere), edges along great circles.

    Parameters
    ----------
    vertices
        ``(ra, dec)`` pairs in degrees, in order around the polygon (either direction).
    """

    vertices: tuple[tuple[float, float], ...]

    @classmethod
    def from_vertices(cls, vertices: Sequence[Sequence[float]]) -> Region:
        verts = tuple((float(ra), float(dec)) for ra, dec in vertices)
        if len(verts) < 3:
            raise DimensionError(f"A sky region needs at least 3 vertices, got {len(verts)}")
        for ra, dec in verts:
            _check_position("A region vertex", ra, dec)
        return cls(verts)

    @classmethod
    def from_box(cls, ra: float, dec: float, width: float, height: float) -> Region:
        """The polygon with corners ``(ra ± width/2, dec ± height/2)`` (degrees).

        Its edges are great-circle arcs between the corners (ADQL's box as a
        four-vertex polygon); a box whose corners would reach a pole is refused.
        """
        ra, dec = _check_position("A box", ra, dec)
        width, height = float(width), float(height)
        if not (0.0 < width < 180.0 and 0.0 < height < 180.0):
            raise DimensionError(f"A box's width and height must be in (0, 180) degrees, got {width}, {height}")
        low, high = dec - height / 2, dec + height / 2
        if low <= -90.0 or high >= 90.0:
            raise DimensionError(
                f"A box centred at dec={dec} with height {height} reaches a pole; use a polygon there"
            )
        west, east = ra - width / 2, ra + width / 2
        return cls(((west, low), (east, low), (east, high), (west, high)))

    @classmethod
    def from_json(cls, text: str) -> Region:
        return cls.from_vertices(json.loads(text))

    def to_json(self) -> str:
        return json.dumps([list(v) for v in self.vertices])

    @cached_property
    def _vectors(self) -> np.ndarray:
        return _unit_vectors(np.asarray(self.vertices))

    @cached_property
    def _cone(self) -> tuple[np.ndarray, float]:
        center, radius = _bounding_cones(self._vectors)
        return center, float(radius)

    @cached_property
    def _edge_normals(self) -> np.ndarray:
        """Unit normals of the edges' great circles, each pointing into the polygon."""
        vecs = self._vectors
        normals = np.cross(vecs, np.roll(vecs, -1, axis=0))
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        normals = normals / np.where(lengths > 0, lengths, 1.0)
        center, _ = self._cone
        if float(np.sum(normals @ center)) < 0:  # vertices given clockwise
            normals = -normals
        return normals

    def is_convex(self) -> bool:
        """Whether the vertices describe a convex polygon smaller than a hemisphere, in order."""
        vecs = self._vectors
        normals = self._edge_normals
        if np.any(np.linalg.norm(np.cross(vecs, np.roll(vecs, -1, axis=0)), axis=1) < _EPSILON):
            return False  # repeated or antipodal consecutive vertices
        # Each vertex must lie strictly inside every edge's hemisphere except the two edges it ends.
        sides = vecs @ normals.T
        n = len(vecs)
        for i in range(n):
            for j in range(n):
                if j != i and j != (i - 1) % n and sides[i, j] <= _EPSILON:
                    return False
        return True

    @cached_property
    def _polygon(self):  # type: ignore[no-untyped-def]
        from spherical_geometry.polygon import SphericalPolygon

        ra, dec = zip(*self.vertices, strict=True)
        center, _ = self._cone
        c_ra = float(np.degrees(np.arctan2(center[1], center[0])))
        c_dec = float(np.degrees(np.arcsin(center[2])))
        return SphericalPolygon.from_radec(list(ra), list(dec), center=(c_ra, c_dec), degrees=True)

    def _contains_strictly(self, vector: np.ndarray) -> bool:
        # A convex polygon is the intersection of its edges' hemispheres.
        return bool(np.all(self._edge_normals @ vector > _EPSILON))

    def _distance_to_boundary(self, vector: np.ndarray) -> float:
        """Smallest angle (radians) from a position to any point of the polygon's edges."""
        vecs = self._vectors
        best = math.inf
        for a, b in zip(vecs, np.roll(vecs, -1, axis=0), strict=True):
            normal = np.cross(a, b)
            norm = np.linalg.norm(normal)
            if norm > 0:
                normal /= norm
                # The foot of the perpendicular lies on the arc when it is on the inner side of both ends.
                foot = vector - (vector @ normal) * normal
                if np.dot(np.cross(a, foot), normal) >= 0 and np.dot(np.cross(foot, b), normal) >= 0:
                    best = min(best, abs(math.asin(float(np.clip(vector @ normal, -1.0, 1.0)))))
                    continue
            best = min(best, _separation(vector, a), _separation(vector, b))
        return best

    def overlaps(self, other: Shape) -> bool:
        """Whether the two shapes share any area (touching edges or corners do not count)."""
        (c1, r1), (c2, r2) = self._cone, other._cone
        if np.arccos(np.clip(c1 @ c2, -1.0, 1.0)) > r1 + r2 + 1e-12:
            return False
        if isinstance(other, Point):
            return self._contains_strictly(other._vector)
        if isinstance(other, Circle):
            return self._contains_strictly(c2) or self._distance_to_boundary(c2) < r2 - _EPSILON
        if r1 + r2 < math.pi / 2:
            return self._shares_area(other)
        # Very large polygons may not lie in one common hemisphere, where the test above
        # holds; spherical_geometry computes their intersection's area instead.
        return bool(self._polygon.overlap(other._polygon) > 1e-9)

    def _shares_area(self, other: Region) -> bool:
        """Separating-edge test for two convex polygons within one hemisphere.

        Seen from the sphere's centre (the gnomonic projection) great circles are straight
        lines and both polygons convex, so they share no area exactly when one polygon
        lies wholly on the outer side of (or on) the great circle of some edge of either.
        A few dot products instead of an intersection's area: about a thousand times
        faster, which is what makes overlaps of 10^4 visits with 10^3 patches cheap to
        compute at insert.
        """
        if np.any(np.max(other._vectors @ self._edge_normals.T, axis=0) <= _EPSILON):
            return False
        return not np.any(np.max(self._vectors @ other._edge_normals.T, axis=0) <= _EPSILON)


Shape = Region | Circle | Point
"""Any sky shape; each answers ``overlaps`` with every other."""


def overlapping_pairs(left: Sequence[Shape], right: Sequence[Shape]) -> list[tuple[int, int]]:
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


def overlapping_records(shape: Shape, regions_json: Sequence[str]) -> list[int]:
    """Indices of the stored regions (JSON vertex lists) that overlap ``shape``.

    The bounding-cone filter runs on all of them at once with numpy, so only the few
    near ``shape`` are built as `Region` objects and tested exactly (a query over 10^4
    visit regions costs about the time to parse their JSON).
    """
    vertex_lists = [json.loads(text) for text in regions_json]
    center, radius = shape._cone
    by_count: dict[int, list[int]] = {}
    for i, vertices in enumerate(vertex_lists):
        by_count.setdefault(len(vertices), []).append(i)
    near: list[int] = []
    inside: list[int] = []  # wholly within a circle: no exact test needed
    for indices in by_count.values():
        vectors = _unit_vectors(np.asarray([vertex_lists[i] for i in indices], dtype=float))  # (k, n, 3)
        centers, radii = _bounding_cones(vectors)
        separation = np.arccos(np.clip(centers @ center, -1.0, 1.0))
        candidate = separation <= radii + radius + 1e-12
        if isinstance(shape, Circle):
            # A circle is its own cone: a region whose bounding cone lies inside it overlaps it.
            within = separation + radii < radius - 1e-12
            inside.extend(indices[k] for k in np.flatnonzero(within))
            candidate &= ~within
        near.extend(indices[k] for k in np.flatnonzero(candidate))
    return sorted(inside + [i for i in near if shape.overlaps(Region.from_vertices(vertex_lists[i]))])

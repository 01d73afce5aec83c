"""Sky shapes: every shape answers overlaps with every other, and touching is not overlapping."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from spherical_geometry.polygon import SphericalPolygon

from skybutler.dimensions.regions import Circle, Point, Region, overlapping_pairs
from skybutler.errors import DimensionError

SQUARE = Region.from_vertices([(10, 0), (11, 0), (11, 1), (10, 1)])  # 1 x 1 degree at the equator
CLOCKWISE = Region.from_vertices([(10, 1), (11, 1), (11, 0), (10, 0)])


@pytest.mark.parametrize("square", [SQUARE, CLOCKWISE])
@pytest.mark.parametrize(
    ("point", "inside"),
    [
        (Point(10.5, 0.5), True),
        (Point(10.001, 0.999), True),
        (Point(11.0, 0.5), False),  # on an edge: touching
        (Point(10.0, 0.0), False),  # a corner
        (Point(11.001, 0.5), False),
        (Point(190.5, -0.5), False),  # the antipode of an inside point
    ],
)
def test_a_point_overlaps_a_polygon_only_when_strictly_inside(square: Region, point: Point, inside: bool) -> None:
    assert square.overlaps(point) is inside
    assert point.overlaps(square) is inside


def test_points_never_overlap_each_other() -> None:
    assert not Point(1, 1).overlaps(Point(1, 1))


@pytest.mark.parametrize(
    ("circle", "overlaps"),
    [
        (Circle(10.5, 0.5, 0.1), True),  # inside
        (Circle(10.5, 0.5, 30), True),  # contains the square
        (Circle(12.0, 0.5, 1.01), True),  # reaches over the edge at ra=11
        (Circle(12.0, 0.5, 0.99), False),  # stops short of it
        (Circle(12.0, 2.0, 1.0), False),  # the nearest corner (11, 1) is ~1.41 degrees away
        (Circle(12.0, 2.0, 1.42), True),
        (Circle(10.5, 3.0, 1.9), False),
    ],
)
def test_a_circle_overlaps_a_polygon_when_they_share_area(circle: Circle, overlaps: bool) -> None:
    assert SQUARE.overlaps(circle) is overlaps
    assert circle.overlaps(SQUARE) is overlaps


def test_circles_and_points_follow_the_angular_distance() -> None:
    assert Circle(0, 0, 1).overlaps(Circle(1.9, 0, 1))
    assert not Circle(0, 0, 1).overlaps(Circle(2, 0, 1))  # touching
    assert Circle(0, 0, 1).overlaps(Point(0.999, 0)) and Point(0.999, 0).overlaps(Circle(0, 0, 1))
    assert not Circle(0, 0, 1).overlaps(Point(1, 0))
    assert Circle(0, 89.5, 1).overlaps(Point(180, 89.6))  # across the pole


def test_a_box_is_the_polygon_through_its_corners() -> None:
    box = Region.from_box(10.5, 0.5, 1, 1)
    assert box.vertices == SQUARE.vertices
    assert box.overlaps(Point(10.5, 0.5)) and not box.overlaps(Point(11.5, 0.5))
    assert not Region.from_box(11.5, 0.5, 1, 1).overlaps(SQUARE)  # shares the edge ra=11


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Circle.from_degrees(0, 0, 0), "radius must be in (0, 180]"),
        (lambda: Circle.from_degrees(0, 91, 1), "dec=91.0, outside [-90, 90]"),
        (lambda: Point.from_degrees(math.nan, 0), "not a finite number"),
        (lambda: Region.from_box(0, 89, 1, 4), "reaches a pole"),
        (lambda: Region.from_box(0, 0, 0, 1), "width and height must be in (0, 180)"),
        (lambda: Region.from_vertices([(0, 0), (1, 1)]), "at least 3 vertices"),
    ],
)
def test_shapes_that_describe_nothing_are_refused(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DimensionError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make()


def test_convexity_is_checked_on_request() -> None:
    assert SQUARE.is_convex() and CLOCKWISE.is_convex()
    assert not Region.from_vertices([(10, 0), (11, 1), (11, 0), (10, 1)]).is_convex()  # a bow tie
    assert not Region.from_vertices([(0, 0), (2, 0), (1, 0.2), (2, 2), (0, 2)]).is_convex()  # a dent
    assert not Region.from_vertices([(0, 0), (0, 0), (1, 1)]).is_convex()


def test_overlapping_pairs_mixes_every_shape() -> None:
    left = [SQUARE, Point(50, 50), Circle(100, 0, 1)]
    right = [Circle(10.5, 0.5, 0.1), SQUARE, Point(100.5, 0), Point(50, 50), Region.from_box(100, 0, 4, 4)]
    assert overlapping_pairs(left, right) == [(0, 0), (0, 1), (2, 2), (2, 4)]


# --- Circles against an independent reference: spherical_geometry's polygons around and inside them ----

STEPS = 8  # spherical_geometry's polygon overlap is slow: an octagon inside and one outside suffice


def polygon_of(region: Region) -> SphericalPolygon:
    ra, dec = zip(*region.vertices, strict=True)
    return SphericalPolygon.from_radec(list(ra), list(dec), degrees=True)


@settings(max_examples=40, deadline=None)
@given(
    center=st.tuples(st.floats(0, 360), st.floats(-80, 80)),
    radius=st.floats(0.05, 3),
    offset=st.tuples(st.floats(-1, 1), st.floats(-1, 1)),
    size=st.tuples(st.floats(0.1, 4), st.floats(0.1, 4)),
)
def test_circle_polygon_overlaps_agree_with_octagons_inside_and_around_the_circle(
    center: tuple[float, float], radius: float, offset: tuple[float, float], size: tuple[float, float]
) -> None:
    ra, dec = center
    reach = radius + max(size)  # boxes near the circle, where the answer is in doubt
    region = Region.from_box(ra + offset[0] * reach, max(-80.0, min(80.0, dec + offset[1] * reach)), *size)
    circle = Circle.from_degrees(ra, dec, radius)
    answer = circle.overlaps(region)
    assert answer == region.overlaps(circle)
    # Within 0.1 degree of tangency spherical_geometry's overlap areas of thin slivers are
    # not reliable (seen: 0.0 for a 0.05-degree-deep overlap), so the reference cannot judge.
    if not region._contains_strictly(circle._cone[0]):
        gap = math.degrees(region._distance_to_boundary(circle._cone[0])) - radius
        assume(abs(gap) > 0.1)
    if answer:  # then the octagon around the circle must reach the box
        around = math.degrees(math.atan(math.tan(math.radians(radius)) / math.cos(math.pi / STEPS)))
        assert SphericalPolygon.from_cone(ra, dec, around, degrees=True, steps=STEPS).overlap(polygon_of(region)) > 0
    else:  # and the octagon inside it must not
        inside = SphericalPolygon.from_cone(ra, dec, radius, degrees=True, steps=STEPS)
        assert inside.overlap(polygon_of(region)) < 1e-6


def test_the_fast_polygon_test_agrees_with_spherical_geometry_areas():
    # Region.overlaps decides polygon pairs with separating edges (no areas); spherical_geometry's
    # intersection area is the independent answer. Random convex polygons near the equator
    # and at dec 70 (where RA is stretched), many of them overlapping.
    rng = random.Random(3)

    def polygon():
        ra, dec = rng.uniform(0, 4), rng.choice([0.0, 70.0]) + rng.uniform(-2, 2)
        radius = rng.uniform(0.1, 3)
        angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(rng.randint(3, 7)))
        return Region.from_vertices([(ra + radius * math.cos(a) / math.cos(math.radians(dec)),
                                      dec + radius * math.sin(a)) for a in angles])

    pairs = [(polygon(), polygon()) for _ in range(300)]
    overlapping = 0
    for a, b in pairs:
        by_area = a._polygon.overlap(b._polygon) > 1e-9
        assert a.overlaps(b) == by_area == b.overlaps(a)
        overlapping += by_area
    assert 50 < overlapping < 250  # both answers are well represented


def test_overlapping_records_agrees_with_overlaps_for_every_shape():
    # The bulk filter (numpy cones, and circles accepting regions wholly inside them) must
    # give exactly what testing each stored region one by one gives.
    from skybutler.dimensions.regions import overlapping_records

    rng = random.Random(11)
    regions = [Region.from_box(rng.uniform(9, 11), rng.uniform(-1, 1), rng.uniform(0.01, 0.5), rng.uniform(0.01, 0.5))
               for _ in range(400)]
    texts = [r.to_json() for r in regions]
    shapes = [Circle.from_degrees(10, 0, radius) for radius in (0.05, 0.4, 1.0, 3.0)]
    shapes += [Point.from_degrees(rng.uniform(9, 11), rng.uniform(-1, 1)) for _ in range(5)]
    shapes += [Region.from_box(10, 0, 0.3, 0.2), Region.from_box(10.8, 0.8, 1.0, 0.1)]
    for shape in shapes:
        assert overlapping_records(shape, texts) == [i for i, r in enumerate(regions) if shape.overlaps(r)]

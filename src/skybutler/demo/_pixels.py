"""Pixel-level building blocks of the demo algorithms, numpy only.

Convolution, connected-component labelling, dilation, background, peak detection,
centroids, aperture sums, adaptive moments and pixel repair. Pixel ``(x, y)`` is
array index ``[y, x]`` with pixel centres at integer coordinates. Nothing here
knows about headers, WCSs or mask bits: `skybutler.demo.algorithms` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def gaussian_kernel(sigma: float) -> np.ndarray:
    half = max(int(np.ceil(3.0 * sigma)), 1)
    x = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable convolution with a symmetric 1-d kernel, zero outside the image."""
    half = len(kernel) // 2
    ny, nx = image.shape
    padded = np.pad(image, half)
    rows = sum(k * padded[:, i:i + nx] for i, k in enumerate(kernel))
    return sum(k * rows[i:i + ny, :] for i, k in enumerate(kernel))


def neighbours(image: np.ndarray, fill: float) -> list[np.ndarray]:
    """The 8 neighbours of every pixel, as shifted copies padded with ``fill``."""
    ny, nx = image.shape
    padded = np.pad(image, 1, constant_values=fill)
    return [padded[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
            for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (8-connected) of a boolean image.

    Every pixel starts with its own flat index as a label; labels shrink to the
    minimum over neighbours, with pointer jumping, until nothing changes.

    Returns
    -------
    labels, n
        Labels ``1..n`` on the mask, 0 elsewhere.
    """
    size = mask.size
    labels = np.where(mask, np.arange(size).reshape(mask.shape), size)
    while True:
        new = np.minimum.reduce([labels, *neighbours(labels, size)])
        new = np.where(mask, new, size)
        flat = new.ravel()
        on = flat < size
        for _ in range(4):  # pointer jumping: adopt the label of the pixel your label names
            flat[on] = flat[flat[on]]
        if np.array_equal(new, labels):
            break
        labels = new
    unique, inverse = np.unique(labels[mask], return_inverse=True)
    out = np.zeros(mask.shape, dtype=np.int32)
    out[mask] = inverse + 1
    return out, len(unique)


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by ``radius`` pixels (square structuring element)."""
    out = mask.copy()
    for _ in range(radius):
        out = np.logical_or.reduce([out, *neighbours(out, False)])
    return out


def interpolation_weights(n: int, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left index and fraction to interpolate linearly from ``centers`` to ``0..n-1``."""
    if len(centers) == 1:
        return np.zeros(n, dtype=int), np.zeros(n)
    pos = np.arange(n)
    index = np.clip(np.searchsorted(centers, pos) - 1, 0, len(centers) - 2)
    frac = np.clip((pos - centers[index]) / (centers[index + 1] - centers[index]), 0.0, 1.0)
    return index, frac


def background(data: np.ndarray, exclude: np.ndarray, cell: int = 64) -> np.ndarray:
    """Smooth background: a 3-sigma-clipped median per ``cell``-pixel square, bilinearly interpolated.

    Parameters
    ----------
    data
        Image.
    exclude
        Pixels not to use (sources, bad pixels, NaNs).
    cell
        Side of the grid cells in pixels.
    """
    ny, nx = data.shape
    ncy, ncx = -(-ny // cell), -(-nx // cell)
    padded = np.full((ncy * cell, ncx * cell), np.nan)
    padded[:ny, :nx] = np.where(exclude | ~np.isfinite(data), np.nan, data)
    blocks = padded.reshape(ncy, cell, ncx, cell).transpose(0, 2, 1, 3).reshape(ncy, ncx, -1)
    with np.errstate(all="ignore"), quiet_nan_warnings():
        median = np.nanmedian(blocks, axis=2)
        spread = 1.4826 * np.nanmedian(np.abs(blocks - median[..., None]), axis=2)
        clipped = np.where(np.abs(blocks - median[..., None]) > 3 * spread[..., None], np.nan, blocks)
        grid = np.nanmedian(clipped, axis=2)
    if not np.isfinite(grid).any():
        return np.zeros_like(data, dtype=float)
    grid = np.where(np.isfinite(grid), grid, np.nanmedian(grid))
    cy = np.minimum((np.arange(ncy) + 0.5) * cell, ny - 1)
    cx = np.minimum((np.arange(ncx) + 0.5) * cell, nx - 1)
    iy, fy = interpolation_weights(ny, cy)
    ix, fx = interpolation_weights(nx, cx)
    iy1, ix1 = np.minimum(iy + 1, ncy - 1), np.minimum(ix + 1, ncx - 1)
    rows = grid[iy] * (1 - fy)[:, None] + grid[iy1] * fy[:, None]
    return rows[:, ix] * (1 - fx)[None, :] + rows[:, ix1] * fx[None, :]


@contextmanager
def quiet_nan_warnings() -> Iterator[None]:
    """Silence numpy's 'All-NaN slice' warnings: all-NaN cells are handled by the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def detect(data: np.ndarray, variance: np.ndarray, psf_sigma: float, threshold: float, *,
            min_area: int = 5) -> dict[str, np.ndarray]:
    """Find peaks in the PSF-smoothed image whose S/N exceeds ``threshold``.

    The image is smoothed with a Gaussian of the PSF's width (a matched filter for a
    Gaussian PSF), the above-threshold pixels are grouped into footprints, and every
    local maximum of the smoothed image inside a footprint of at least ``min_area``
    pixels, off the outermost rows and columns, is a peak. NaN pixels carry no weight.

    Returns
    -------
    dict
        ``x``, ``y`` (int peak pixels), ``snr``, ``footprint`` (label of each peak),
        ``footprint_area``, and the full ``labels`` image.
    """
    valid = np.isfinite(data) & np.isfinite(variance)
    kernel = gaussian_kernel(psf_sigma)
    smoothed = convolve(np.where(valid, data, 0.0), kernel)
    smoothed_var = convolve(np.where(valid, variance, 0.0), kernel**2)
    with np.errstate(all="ignore"):
        snr = np.where(smoothed_var > 0, smoothed / np.sqrt(smoothed_var), 0.0)
    above = snr > threshold
    labels, _ = label(above)
    area = np.bincount(labels.ravel())
    peak = above & (smoothed >= np.maximum.reduce(neighbours(smoothed, -np.inf)))
    peak[[0, -1], :] = peak[:, [0, -1]] = False  # an edge "peak" may be the wing of an object beyond
    ys, xs = np.nonzero(peak)
    keep = area[labels[ys, xs]] >= min_area
    ys, xs = ys[keep], xs[keep]
    order = np.argsort(-snr[ys, xs], kind="stable")
    ys, xs = ys[order], xs[order]
    return {"x": xs, "y": ys, "snr": snr[ys, xs], "footprint": labels[ys, xs],
            "footprint_area": area[labels[ys, xs]], "labels": labels}


def centroid(data: np.ndarray, x: float, y: float, sigma: float, n_iter: int = 4
              ) -> tuple[float, float, bool]:
    """Gaussian-weighted first moments, iterated from ``(x, y)``.

    Returns the new position and whether it converged within 2 pixels of the start.
    """
    ny, nx = data.shape
    half = int(np.ceil(3 * sigma)) + 1
    x0, y0 = x, y
    for _ in range(n_iter):
        cx, cy = int(round(x)), int(round(y))
        xa, xb, ya, yb = max(cx - half, 0), min(cx + half + 1, nx), max(cy - half, 0), min(cy + half + 1, ny)
        if xa >= xb or ya >= yb:
            return x0, y0, False
        stamp = data[ya:yb, xa:xb]
        yy, xx = np.mgrid[ya:yb, xa:xb]
        weight = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) * stamp
        weight = np.where(np.isfinite(weight), weight, 0.0)
        total = weight.sum()
        if total <= 0:
            return x0, y0, False
        x, y = float((weight * xx).sum() / total), float((weight * yy).sum() / total)
    ok = abs(x - x0) <= 2.0 and abs(y - y0) <= 2.0
    return (x, y, True) if ok else (x0, y0, False)


def aperture_sum(data: np.ndarray, variance: np.ndarray | None, origin: tuple[int, int],
                  x: float, y: float, radius: float) -> tuple[float, float, bool]:
    """Sum of the pixels whose centres lie within ``radius`` of parent pixel ``(x, y)``.

    ``data`` holds parent pixels ``[y0:y0+ny, x0:x0+nx]`` with ``origin = (y0, x0)``.
    The selection and summation order depend only on parent coordinates, so a cutout
    and its parent give the identical sum.

    Returns
    -------
    flux, variance, complete
        ``complete`` is False if part of the aperture is off the array or NaN;
        the sums then cover only the pixels present.
    """
    oy, ox = origin
    ny, nx = data.shape
    gx0, gx1 = int(np.floor(x - radius)), int(np.ceil(x + radius)) + 1
    gy0, gy1 = int(np.floor(y - radius)), int(np.ceil(y + radius)) + 1
    yy, xx = np.mgrid[gy0:gy1, gx0:gx1]
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    ly0, ly1 = max(gy0 - oy, 0), min(gy1 - oy, ny)
    lx0, lx1 = max(gx0 - ox, 0), min(gx1 - ox, nx)
    if ly0 >= ly1 or lx0 >= lx1:
        return float("nan"), float("nan"), False
    sel = inside[ly0 + oy - gy0:ly1 + oy - gy0, lx0 + ox - gx0:lx1 + ox - gx0]
    values = data[ly0:ly1, lx0:lx1][sel]
    finite = np.isfinite(values)
    complete = bool(sel.sum() == inside.sum() and finite.all())
    flux = float(values[finite].sum())
    var = float("nan")
    if variance is not None:
        var = float(variance[ly0:ly1, lx0:lx1][sel][finite].sum())
    return flux, var, complete


def adaptive_sigma(data: np.ndarray, x: float, y: float, sigma: float) -> float:
    """PSF sigma in pixels from adaptive (Gaussian-weighted) second moments of one star.

    For a Gaussian of variance s2 under a Gaussian weight of variance w2 the weighted
    second moment is ``m = s2 w2 / (s2 + w2)``; solve for s2 and iterate with w2 = s2.
    Pixel integration adds 1/12 pixel^2, which is removed. NaN if it does not converge.
    """
    ny, nx = data.shape
    w2 = sigma**2
    s2 = float("nan")
    for _ in range(10):
        half = int(np.ceil(4 * np.sqrt(w2))) + 1
        cx, cy = int(round(x)), int(round(y))
        xa, xb, ya, yb = cx - half, cx + half + 1, cy - half, cy + half + 1
        if xa < 0 or ya < 0 or xb > nx or yb > ny:
            return float("nan")
        stamp = data[ya:yb, xa:xb]
        yy, xx = np.mgrid[ya:yb, xa:xb]
        r2 = (xx - x) ** 2 + (yy - y) ** 2
        weight = np.exp(-r2 / (2 * w2)) * stamp
        total = weight.sum()
        if not np.isfinite(total) or total <= 0:
            return float("nan")
        m = float((weight * r2).sum() / total / 2)
        if not 0 < m < w2:
            return float("nan")
        s2 = m * w2 / (w2 - m)
        w2 = s2
    return float(np.sqrt(s2 - 1 / 12)) if s2 > 1 / 12 else float("nan")


def interpolate_columns(data: np.ndarray, variance: np.ndarray, bad: np.ndarray) -> None:
    """Replace bad pixels by the mean of the nearest good pixels left and right, in place."""
    for y, x in zip(*np.nonzero(bad), strict=True):
        row = bad[y]
        left = x - 1
        while left >= 0 and row[left]:
            left -= 1
        right = x + 1
        while right < row.size and row[right]:
            right += 1
        picks = [i for i in (left, right) if 0 <= i < row.size]
        if picks:
            data[y, x] = np.mean(data[y, picks])
            variance[y, x] = np.mean(variance[y, picks])


def repair_cosmic_rays(data: np.ndarray, variance: np.ndarray, background: np.ndarray,
                       interpolated: np.ndarray, threshold: float = 6.0) -> np.ndarray:
    """Find cosmic rays and replace them by a local median, in place.

    A cosmic ray is sharper than any PSF: in at least one of the four directions
    through a pixel, the mean of the two opposite neighbours is ``threshold`` sigma
    below the pixel and, even with both moved 2 sigma towards each other, less than
    half of it (background subtracted). A Gaussian PSF of more than 1.1 pixel sigma
    (0.52" FWHM) keeps that mean above 0.44 of the peak, even along the diagonal.

    Parameters
    ----------
    data, variance
        Image and variance, repaired in place.
    background
        Background of ``data``.
    interpolated
        Pixels already interpolated over (bad columns): neither cosmic rays nor
        trustworthy neighbours.
    threshold
        Significance, in sigma, a cosmic-ray pixel must have above its neighbours.

    Returns
    -------
    numpy.ndarray
        Boolean image of the pixels replaced.
    """
    image = data - background
    sigma = np.sqrt(variance)
    ny, nx = image.shape
    padded = np.pad(image, 1, mode="edge")

    def at(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]

    cosmic = np.zeros(image.shape, dtype=bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair = 0.5 * (at(dy, dx) + at(-dy, -dx))
        sharp = pair + 2 * sigma < 0.5 * (image - 2 * sigma)  # sharper than a PSF, even with noise
        cosmic |= sharp & (image - pair > threshold * sigma) & (image > threshold * sigma)
    # Interpolated pixels make poor neighbours, and the edge has no pairs.
    cosmic &= ~grow(interpolated, 1)
    cosmic[[0, -1], :] = cosmic[:, [0, -1]] = False
    cosmic = grow(cosmic, 1) & (image > 3 * sigma) & ~interpolated  # the fainter pixels of a track
    for y, x in zip(*np.nonzero(cosmic), strict=True):
        ya, yb, xa, xb = max(y - 2, 0), min(y + 3, ny), max(x - 2, 0), min(x + 3, nx)
        good = ~cosmic[ya:yb, xa:xb]
        if good.any():
            data[y, x] = background[y, x] + np.median(image[ya:yb, xa:xb][good])
            variance[y, x] = np.median(variance[ya:yb, xa:xb][good])
    return cosmic

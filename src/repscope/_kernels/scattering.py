"""A small 2-D wavelet-scattering network: Morlet filters, modulus, low-pass averaging.

The training-free baseline of Wiatowski & Bölcskei (2018) and Mallat (2012), written here
because kymatio 0.3.0 fails to import against current SciPy. Images are treated as periodic
(circular convolution by FFT, no sub-sampling), so Parseval holds exactly on the grid.

Layer ``n`` propagates ``U_n = {|u * psi_lambda| : u in U_{n-1}}`` (``U_0 = {f}``) and outputs
``Phi^n(f) = {u * phi : u in U_n}``. The filter bank is rescaled so that its Littlewood-Paley
sum satisfies ``|phi^(w)|^2 + sum_lambda |psi^_lambda(w)|^2 <= 1`` at every frequency (frame
bound ``B <= 1``); the modulus is 1-Lipschitz and there is no pooling, so the admissibility
condition ``max(B, B L^2 R^2) <= 1`` holds and the network is non-expansive:
``sum_n ||Phi^n(f) - Phi^n(h)||^2 <= ||f - h||^2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repscope.exceptions import RepscopeValueError

__all__ = ["Scattering2D"]


def _freq_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    wy = 2.0 * np.pi * np.fft.fftfreq(h)
    wx = 2.0 * np.pi * np.fft.fftfreq(w)
    return np.meshgrid(wy, wx, indexing="ij")


@dataclass(frozen=True)
class Scattering2D:
    """Morlet scattering of ``(n, H, W)`` images to depth ``depth``.

    Parameters
    ----------
    shape : (int, int)
        Image height and width.
    J : int, default=2
        Scales ``2^0 .. 2^(J-1)`` of the wavelets; the low-pass has scale ``2^J``.
    L : int, default=4
        Orientations in ``[0, pi)``.
    depth : int, default=2
        Wavelet-modulus layers (paths: ``(J L)^n`` at layer ``n``).
    sigma : float, default=0.8
        Gaussian width of the mother wavelet (in pixels at scale 1).
    xi : float, default=3 pi / 4
        Centre frequency of the mother wavelet.
    """

    shape: tuple[int, int]
    J: int = 2
    L: int = 4
    depth: int = 2
    sigma: float = 0.8
    xi: float = 3.0 * np.pi / 4.0
    _bank: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.shape)
        if h < 4 or w < 4:
            raise RepscopeValueError(f"Scattering2D needs images of at least 4 x 4 pixels; got "
                                     f"shape {self.shape}.")
        for name, v, lo in (("J", self.J, 1), ("L", self.L, 1), ("depth", self.depth, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise RepscopeValueError(
                    f"The {name!r} parameter of Scattering2D must be an int >= {lo}. Got {v!r} "
                    "instead.")
        object.__setattr__(self, "_bank", self._filters(h, w))

    def _filters(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        wy, wx = _freq_grid(h, w)
        s2 = self.sigma**2
        psis = []
        for j in range(self.J):
            a = 2.0**j
            for ell in range(self.L):
                th = np.pi * ell / self.L
                uy, ux = a * wy, a * wx
                gabor = np.exp(-s2 * ((uy - self.xi * np.sin(th)) ** 2
                                      + (ux - self.xi * np.cos(th)) ** 2) / 2.0)
                env = np.exp(-s2 * (uy**2 + ux**2) / 2.0)
                beta = np.exp(-s2 * self.xi**2 / 2.0)         # zero mean: psi^(0) = 0
                psis.append(gabor - beta * env)
        a = 2.0**self.J
        phi = np.exp(-s2 * a**2 * (wy**2 + wx**2) / 2.0)
        psi = np.stack(psis)
        lp = phi**2 + (np.abs(psi) ** 2).sum(axis=0)
        scale = 1.0 / np.sqrt(lp.max())                    # Littlewood-Paley sum <= 1
        return psi * scale, phi * scale

    @property
    def frame_bound(self) -> float:
        """``max_w |phi^(w)|^2 + sum |psi^(w)|^2`` (<= 1 by construction)."""
        psi, phi = self._bank
        return float((phi**2 + (np.abs(psi) ** 2).sum(axis=0)).max())

    def layers(self, images: Any) -> list[np.ndarray]:
        """``Phi^0 .. Phi^depth`` of a batch: layer ``n`` has shape (n_images, (J L)^n, H, W)."""
        f = np.asarray(images, dtype=np.float64)
        if f.ndim == 2:
            f = f[None]
        if f.ndim != 3 or tuple(f.shape[1:]) != tuple(self.shape):
            raise RepscopeValueError(
                f"images must have shape (n, {self.shape[0]}, {self.shape[1]}); got "
                f"{tuple(np.shape(images))}.")
        psi, phi = self._bank
        U = np.fft.fft2(f)[:, None]                         # (n, paths, H, W), Fourier domain
        out = []
        for n in range(self.depth + 1):
            out.append(np.real(np.fft.ifft2(U * phi)))
            if n == self.depth:
                break
            mod = np.abs(np.fft.ifft2(U[:, :, None] * psi[None, None]))
            U = np.fft.fft2(mod.reshape(mod.shape[0], -1, *self.shape))
        return out

    def __call__(self, images: Any) -> np.ndarray:
        """Every layer's output concatenated: (n_images, sum_n (J L)^n H W)."""
        parts = self.layers(images)
        return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)

"""What one adversarial run computes with: the attack by name, its budget, the analyses.

:class:`AttackSettings` is the snapshot a run takes of its settings (the widget's traits);
:func:`attack_args` turns a method name (``"fgsm"``, ``"pgd-linf"``, ``"pgd-l2"``) into the
keyword arguments of :func:`~cnnvis_widgets.core.adversarial.pgd_steps`; :func:`check_epsilon`
and :func:`check_target` are the range checks with the messages a person needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..blocks.settings import Settings

__all__ = [
    "METHODS",
    "LINF_MAX",
    "L2_MAX",
    "DEFAULT_EPS",
    "norm_of",
    "eps_text",
    "attack_args",
    "describe",
    "check_epsilon",
    "check_target",
    "AttackSettings",
]

#: the attacks offered by name
METHODS = ("fgsm", "pgd-linf", "pgd-l2")
#: largest epsilon of the slider per norm (pixel units); a typed L2 value may go 4x higher
LINF_MAX = 16 / 255
L2_MAX = 8.0
#: the epsilon a norm starts from
DEFAULT_EPS = {"linf": 4 / 255, "l2": 1.0}


def norm_of(method: str) -> str:
    """The norm of an attack method: ``"l2"`` for ``"pgd-l2"``, else ``"linf"``.

    Examples
    --------
    >>> norm_of("pgd-l2"), norm_of("fgsm")
    ('l2', 'linf')
    """
    return "l2" if method == "pgd-l2" else "linf"


def eps_text(eps: float, norm: str) -> str:
    """Epsilon as a person reads it: grey levels for L-infinity, the plain number for L2.

    Examples
    --------
    >>> eps_text(4 / 255, "linf")
    '4/255 (0.01569)'
    >>> eps_text(1.0, "l2")
    '1'
    """
    if norm == "linf":
        return f"{eps * 255:.3g}/255 ({eps:.4g})"
    return f"{eps:.4g}"


def attack_args(
    method: str,
    eps: float,
    steps: int = 10,
    step_size: float = 0.0,
    random_start: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Keyword arguments of :func:`~cnnvis_widgets.core.adversarial.pgd_steps` for a method.

    FGSM is one step of size ``eps`` without a random start; a ``step_size`` of 0 lets PGD pick
    its default (``2.5 * eps / steps``).

    Examples
    --------
    >>> attack_args("fgsm", 0.03)
    {'eps': 0.03, 'steps': 1, 'step_size': 0.03, 'norm': 'linf', 'random_start': False}
    >>> attack_args("pgd-l2", 1.0, steps=5)["norm"]
    'l2'
    """
    eps = float(eps)
    if method == "fgsm":
        return dict(eps=eps, steps=1, step_size=eps, norm="linf", random_start=False)
    return dict(
        eps=eps,
        steps=int(steps),
        step_size=float(step_size) or None,
        norm=norm_of(method),
        random_start=bool(random_start),
        seed=int(seed),
    )


def describe(method: str, eps: float, target: int, class_name: Callable[[int], str]) -> str:
    """One line naming an attack: ``"pgd-linf eps 4/255 (0.01569), untargeted"``.

    Examples
    --------
    >>> describe("fgsm", 4 / 255, -1, str)
    'fgsm eps 4/255 (0.01569), untargeted'
    """
    tgt = "untargeted" if target < 0 else f"target {class_name(target)}"
    return f"{method} eps {eps_text(eps, norm_of(method))}, {tgt}"


def check_epsilon(eps: float, norm: str) -> float:
    """``eps`` when it is a budget a person may ask for: ``[0, 1]`` for L-infinity, up to
    ``4 * L2_MAX`` for L2; else a ``ValueError`` saying the unit (NaN is refused too).

    Examples
    --------
    >>> check_epsilon(4 / 255, "linf") == 4 / 255
    True
    >>> check_epsilon(2.0, "linf")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: epsilon must be between 0 and 1 in pixel units ... got 2.0
    """
    v = float(eps)
    high = L2_MAX * 4 if norm == "l2" else 1.0
    if not 0.0 <= v <= high:  # also rejects NaN
        raise ValueError(
            f"epsilon must be between 0 and {high:g} in pixel units (4/255 = "
            f"{4 / 255:.4f} is four grey levels), got {v}"
        )
    return v


def check_target(target: int, num_classes: int) -> int:
    """``target`` when it is a class index or -1 (untargeted); else a ``ValueError``.

    Examples
    --------
    >>> check_target(-1, 10), check_target(9, 10)
    (-1, 9)
    """
    c = int(target)
    if not -1 <= c < num_classes:
        raise ValueError(
            f"target class {c} is out of range: valid 0..{num_classes - 1}, "
            "or -1 for an untargeted attack"
        )
    return c


@dataclass
class AttackSettings(Settings):
    """The settings one adversarial run computes with (a snapshot: traits may move meanwhile).

    Attributes
    ----------
    method : str
        One of :data:`METHODS`.
    epsilon : float
        Budget in pixel units (L-infinity or L2, after the method).
    steps, step_size, random_start, seed :
        The PGD settings (see :func:`attack_args`); ``seed`` seeds the unit pictures too.
    target : int
        Class to reach; -1: untargeted.
    layer : str or None
        Layer whose ``n_units`` most changed units are listed.
    n_units : int
        Number of most changed units listed (and pictured).
    attribution, cam_layer : str, str
        Attribution method of the maps and its Grad-CAM layer ("": the default).
    show_units, am_steps, am_size : bool, int, int
        Whether to synthesize what the units look for (activation maximization), its steps and
        the side of the pictures; :attr:`unit_steps` is 0 without pictures.

    Examples
    --------
    >>> s = AttackSettings(method="fgsm", steps=50)
    >>> s.norm, s.attack_steps, s.args()["steps"], s.unit_steps
    ('linf', 1, 1, 48)
    """

    method: str = "pgd-linf"
    epsilon: float = 4 / 255
    steps: int = 10
    step_size: float = 0.0
    random_start: bool = True
    seed: int = 0
    target: int = -1
    layer: str | None = None
    n_units: int = 6
    attribution: str = "grad_cam"
    cam_layer: str = ""
    show_units: bool = True
    am_steps: int = 48
    am_size: int = 64

    def check(self, name: str, value: Any) -> Any:
        if name == "method" and value not in METHODS:
            raise ValueError(f"unknown method {value!r}; choose one of {', '.join(METHODS)}")
        return value

    @property
    def norm(self) -> str:
        """``"linf"`` or ``"l2"``, after the method."""
        return norm_of(self.method)

    @property
    def attack_steps(self) -> int:
        """Steps of the attack (FGSM makes one)."""
        return 1 if self.method == "fgsm" else int(self.steps)

    @property
    def unit_steps(self) -> int:
        """Steps of the unit pictures (0 when they are not asked for)."""
        return int(self.am_steps) if self.show_units else 0

    @property
    def target_class(self) -> int | None:
        """The target, None for an untargeted attack."""
        return None if self.target < 0 else int(self.target)

    def args(self) -> dict[str, Any]:
        """The keyword arguments of the attack (:func:`attack_args`)."""
        return attack_args(
            self.method, self.epsilon, self.steps, self.step_size, self.random_start, self.seed
        )

    def attack_key(self) -> tuple:
        """What the adversarial image depends on, besides the clean image (the attack cache)."""
        return (
            self.method,
            float(self.epsilon),
            self.attack_steps,
            float(self.step_size),
            bool(self.random_start),
            int(self.seed),
            int(self.target),
        )

    def describe(self, class_name: Callable[[int], str]) -> str:
        """One line naming the attack (:func:`describe`)."""
        return describe(self.method, self.epsilon, self.target, class_name)

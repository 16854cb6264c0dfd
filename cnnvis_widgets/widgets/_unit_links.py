"""Links from the Atlas to the methods: open another method's widget on the unit shown.

:class:`MethodLinks` gives the Atlas its ``open_unit(kind)`` (the ActivationMaximization,
DeconvNet or Dissection widget configured on the current layer and unit, sharing the model and
the results cache), the "Open this unit in" buttons and the output area below the atlas where a
pressed button shows the opened widget.
"""

from __future__ import annotations

from typing import Any

from ._base import CnnvisWidget

__all__ = ["OPENERS", "MethodLinks"]

#: kind -> the name of the method on the buttons
OPENERS = {
    "am": "Activation maximization",
    "deconvnet": "DeconvNet",
    "dissection": "Dissection",
}


class MethodLinks:
    """Mixin of the Atlas (before its widget base class).

    The widgets the buttons opened are kept in ``opened`` (a list the atlas makes), oldest
    first; the atlas's settings ``preset``, ``steps``, ``size``, ``seed``, ``n_images`` and
    ``probe_images`` configure them."""

    handle: Any
    layer: str
    unit: int
    opened: list[CnnvisWidget]
    _output: Any = None
    _app: Any = None

    def open_unit(self, kind: str = "am") -> CnnvisWidget:
        """The widget of one method configured on the current unit, sharing the model.

        ``kind``: ``"am"`` (ActivationMaximization with the atlas's preset, steps, size and seed:
        it shows the atlas's cached image at once), ``"deconvnet"`` or ``"dissection"``.
        """
        s: Any = self
        here = dict(layer=self.layer, unit=self.unit)
        if kind == "am":
            from .activation_max import ActivationMaximization

            am = dict(preset=s.preset, steps=s.steps, size=s.size, seed=s.seed)
            return ActivationMaximization(self.handle, **here, **am)
        if kind == "deconvnet":
            from .deconvnet import DeconvNet

            return DeconvNet(self.handle, **here, n_images=s.n_images)
        if kind == "dissection":
            from .dissection import Dissection

            n = max(16, s.probe_images)
            return Dissection(self.handle, layers=[self.layer], **here, n_images=n)
        raise ValueError(f"unknown method {kind!r}: use 'am', 'deconvnet' or 'dissection'")

    @property
    def output(self) -> Any:
        """The area below the atlas where :meth:`open_unit` buttons show the opened widget."""
        if self._output is None:
            import ipywidgets

            self._output = ipywidgets.Output()
        return self._output

    def app(self) -> Any:
        """The atlas with the area for opened widgets below it (what displaying the atlas shows)."""
        if self._app is None:
            import ipywidgets

            self._app = ipywidgets.VBox([self, self.output])
        return self._app

    def _control_specs(self) -> list[dict]:
        opener = {"group": "Open this unit in", "visible_when": {"trait": "view", "in": ["unit"]}}
        buttons = [
            {"kind": "button", "label": label, "action": f"open_{kind}", **opener}
            for kind, label in OPENERS.items()
        ]
        return super()._control_specs() + buttons  # type: ignore[misc]

    def _on_action(self, name: str, content: dict) -> None:
        s: Any = self
        kind = name.removeprefix("open_")
        if kind not in OPENERS:
            return
        try:
            widget = self.open_unit(kind)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, which stays usable
            s.error = f"could not open {kind} on {self.layer} unit {self.unit}: {exc}"
            return
        self.opened.append(widget)
        bundle = widget._repr_mimebundle_()
        # set the output directly (not `with output:`): this runs on a message thread
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {k: v for k, v in bundle.items() if k != "image/png"},
                "metadata": {},
            },
        )
        s.status = f"opened {OPENERS[kind]} on {self.layer} unit {self.unit} below the atlas"

    def _repr_mimebundle_(self, **kwargs: Any):
        # displaying the atlas shows it with the area for opened widgets below it
        data = dict(self.app()._repr_mimebundle_(**kwargs) or {})
        own = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        if "image/png" in own:
            data["image/png"] = own["image/png"]
        return data

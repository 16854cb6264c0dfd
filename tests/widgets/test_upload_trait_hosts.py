"""The upload bytes trait accepts every form a host delivers (issue 13, marimo).

Jupyter hands ``set_state`` a memoryview for a bytes trait set in the browser; marimo hands it
``bytes``, which ipywidgets' ``bytes_serialization`` (``js.tobytes()``) rejected with an
AttributeError inside marimo's message handler, so uploads never reached Python there.
"""

from __future__ import annotations

import base64

import traitlets as t

from cnnvis_widgets.widgets._base import _bytes_from_json, upload_trait

PNG = b"\x89PNG\r\n\x1a\n\x00\x01\x02"


class _W(t.HasTraits):
    upload = upload_trait()


def test_every_host_form_gives_the_same_bytes() -> None:
    forms = [
        memoryview(PNG),
        PNG,
        bytearray(PNG),
        base64.b64encode(PNG).decode(),
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        list(PNG),
        {str(i): b for i, b in enumerate(PNG)},
    ]
    for js in forms:
        assert _bytes_from_json(js, None) == PNG, type(js)


def test_unreadable_values_are_empty_not_errors() -> None:
    for js in (None, "not base64!", {"a": 1}, [300], 3.5, object()):
        assert _bytes_from_json(js, None) == b""


def test_the_trait_uses_it_when_the_front_end_sets_state() -> None:
    meta = _W.class_traits()["upload"].metadata
    assert meta["sync"] is True
    w = _W()
    w.upload = meta["from_json"](PNG, w)  # what ipywidgets' set_state does with marimo's bytes
    assert w.upload == PNG

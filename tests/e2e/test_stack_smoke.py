"""Smoke tests of the e2e stack itself (Chromium + Voila/JupyterLab + anywidget), independent of
cnnvis_widgets: a tiny inline anywidget whose range input is moved in the browser, the kernel
echoes the value back, and the page must not have tried to reach any non-loopback host."""

from __future__ import annotations

import pytest
from e2e_helpers import click_range_at, unexpected_requests, wait_until, write_notebook

pytestmark = pytest.mark.e2e

ESM = r"""
function render({ model, el }) {
  el.classList.add('smoke-root');
  const input = document.createElement('input');
  input.type = 'range'; input.min = '0'; input.max = '10'; input.step = '1';
  input.value = String(model.get('value'));
  input.setAttribute('data-smoke', 'slider');
  const send = () => { model.set('value', Number(input.value)); model.save_changes(); };
  input.addEventListener('input', send);
  input.addEventListener('change', send);
  const echo = document.createElement('span');
  echo.setAttribute('data-smoke', 'echo');
  echo.textContent = model.get('echo');
  model.on('change:echo', () => { echo.textContent = model.get('echo'); });
  model.on('change:value', () => { input.value = String(model.get('value')); });
  el.append(input, echo);
}
export default { render };
"""

CELL = f"""
import anywidget
import traitlets

class Smoke(anywidget.AnyWidget):
    _esm = {ESM!r}
    value = traitlets.Int(3).tag(sync=True)
    echo = traitlets.Unicode("python saw 3").tag(sync=True)

    @traitlets.observe("value")
    def _echo(self, change):
        self.echo = f"python saw {{change['new']}}"

w = Smoke()
w
"""


def _exercise_widget(root, timeout: float, by_click: bool = False) -> None:
    slider = root.locator('[data-smoke="slider"]')
    echo = root.locator('[data-smoke="echo"]')
    wait_until(echo.text_content, lambda t: t == "python saw 3", timeout, "the initial echo")
    if by_click:
        # Inside a JupyterLab notebook the arrow keys go to the notebook, not the slider.
        click_range_at(slider, 0.8)
    else:
        slider.focus()
        slider.press("ArrowRight")
        slider.press("ArrowRight")
    value = int(slider.input_value())
    assert value > 3
    # The value went browser -> kernel, the observer ran there and its echo came back.
    wait_until(echo.text_content, lambda t: t == f"python saw {value}", timeout, "the echo")


def test_voila_serves_inline_anywidget_offline(
    tmp_path, voila_server, page, blocked_requests, artifacts_dir
):
    nb = write_notebook(tmp_path / "smoke.ipynb", [CELL], markdown="# e2e smoke")
    server = voila_server(nb)
    print(f"voila answered after {server.start_seconds:.1f} s")
    page.goto(server.url, wait_until="domcontentloaded")
    root = page.locator(".smoke-root").first
    root.wait_for(state="visible", timeout=120_000)
    _exercise_widget(root, 60)
    page.screenshot(path=str(artifacts_dir / "smoke_voila.png"))
    # Only Voila's template stylesheets tried to leave the machine (and were aborted).
    assert unexpected_requests(blocked_requests) == []


def test_jupyterlab_runs_inline_anywidget_offline(
    tmp_path, lab_server, page, blocked_requests, artifacts_dir
):
    write_notebook(tmp_path / "smoke.ipynb", [CELL])
    server = lab_server(tmp_path, open_path="smoke.ipynb")
    print(f"jupyterlab answered after {server.start_seconds:.1f} s")
    page.goto(server.url, wait_until="domcontentloaded")
    panel = page.locator(".jp-NotebookPanel:visible").first
    panel.wait_for(timeout=120_000)
    # The kernel is ready once the status bar says Idle.
    page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    root = panel.locator(".smoke-root").first
    root.wait_for(state="visible", timeout=120_000)
    _exercise_widget(root, 60, by_click=True)
    page.screenshot(path=str(artifacts_dir / "smoke_jupyterlab.png"))
    assert blocked_requests == []

"""The notebooks' sliders in a real browser: JupyterLab, Chromium, the smoke profile's
parameters. Each test runs all cells, moves a slider with the keyboard as a user would, and
checks that the numbers shown change to the values the library computes for the new setting;
screenshots before and after go to ``figures/interactive/``, with the measured response times."""
import json
import time
from pathlib import Path

import pytest

from helpers.report import reproduce

pytestmark = [pytest.mark.browser, pytest.mark.data, pytest.mark.model, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "figures" / "interactive"
OUT_DIR = reproduce.figures_dir("smoke")  # the smoke profile's results, shared with `make reproduce PROFILE=smoke`
RUN_ALL_TIMEOUT_MS = 600_000  # a hang guard: on a cold cache notebook 03 takes about 2 min here, longer on a slower or busy machine
READOUT = ".edithurt-readout"


def _prepare(name: str, folder: Path) -> dict:
    """The notebook with the smoke profile's parameters injected (as `make reproduce` does), in
    the lab's folder; returns those parameters."""
    import papermill

    from helpers.report import reproduce

    params = reproduce.notebook_parameters("smoke", reproduce.load_profile("smoke"), name, OUT_DIR)
    papermill.execute_notebook(ROOT / "notebooks" / f"{name}.ipynb", folder / f"{name}.ipynb", parameters=params,
                               prepare_only=True, kernel_name="python3", progress_bar=False)
    return {**reproduce.notebook_defaults(name), **params}


def _open_and_run_all(page, lab, name: str):
    base, token, _ = lab
    # a workspace of its own: only this notebook is open (a shared one would restore the others)
    page.goto(f"{base}/lab/workspaces/{name.replace('_', '-')}/tree/{name}.ipynb?token={token}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    # the kernel connected (the status bar names it and says Idle) before anything is run
    page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=120_000)
    started = "() => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')].some(e => /\\[[*0-9]/.test(e.innerText))"
    for attempt in range(3):  # a click that came before the kernel answered runs nothing: click again
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()
        try:
            page.wait_for_function(started, timeout=20_000)
            break
        except Exception:
            if attempt == 2:
                raise
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']", has_text="Traceback")
    try:
        # the slider is there and every cell is done: no prompt shows [*] (running or queued)
        page.wait_for_function("(sel) => document.querySelector(sel) !== null && [...document.querySelectorAll("
                               "'.jp-Notebook .jp-InputPrompt')].every(e => !e.innerText.includes('*'))",
                               arg=READOUT, timeout=RUN_ALL_TIMEOUT_MS)
    except Exception:
        shot = lab[2] / f"{name}-failed.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"{name}: running all cells did not show the slider (screenshot {shot}); errors: "
                             f"{[e.inner_text()[-1500:] for e in errors.all()]}") from None
    assert errors.count() == 0, errors.first.inner_text()[-3000:]


# the view's figure: the image in the output area right after the readout
FIGURE_JS = "(sel) => document.querySelector(sel).parentElement.querySelector('.jp-OutputArea-output img')?.src"


def _move(page, slider_index: int, key: str) -> tuple[str, str, float]:
    """Press ``key`` on a slider's handle; ``(text before, text after, seconds until both the
    numbers and the figure on screen were the new ones)``."""
    readout = page.locator(READOUT).first
    readout.scroll_into_view_if_needed()
    before, image = readout.inner_text(), page.evaluate(FIGURE_JS, READOUT)
    assert image, "the view shows no figure"
    handle = page.locator(".widget-slider .noUi-handle").nth(slider_index)
    handle.scroll_into_view_if_needed()
    start = time.perf_counter()
    handle.press(key)
    page.wait_for_function(f"([sel, old, img]) => document.querySelector(sel).innerText !== old && "
                           f"({FIGURE_JS})(sel) && ({FIGURE_JS})(sel) !== img", arg=[READOUT, before, image],
                           timeout=60_000)
    return before, readout.inner_text(), time.perf_counter() - start


def _shot(page, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    widget = page.locator(READOUT).first.locator("xpath=ancestor::div[contains(@class,'jp-OutputArea-output')][1]")
    widget.screenshot(path=str(SHOTS / f"{name}.png"))
    return (SHOTS / f"{name}.png").read_bytes()


def _record(key: str, seconds: float):
    path = SHOTS / "response_times.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = round(seconds, 3)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def test_weight_statistics_slider_redraws_with_the_stored_numbers(lab, browser):
    from helpers.runs import experiments
    from helpers.report.sliders import edits_frame, weight_change_readout

    params = _prepare("02_weight_statistics", lab[2])
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    _open_and_run_all(page, lab, "02_weight_statistics")
    _, cumulative = experiments.weight_change(params["model"], params["method"], max_edits=params["max_edits"],
                                              n_single=params["n_single"], seed=params["seed"],
                                              hparams=params["hparams"], store=OUT_DIR / "results" / "edits.jsonl",
                                              progress=False)
    first, last = min(cumulative), max(cumulative)
    name, _, stats = edits_frame(cumulative, first)
    assert page.locator(READOUT).first.inner_text() == weight_change_readout(name, first, stats)
    png_before = _shot(page, "02_weight_statistics_before")
    before, after, seconds = _move(page, 0, "End")  # the number-of-edits slider to its last point
    name, _, stats = edits_frame(cumulative, last)
    assert after == weight_change_readout(name, last, stats) != before
    assert _shot(page, "02_weight_statistics_after") != png_before  # the heat map was redrawn
    _record("02_weight_statistics.edits_slider_s", seconds)
    assert page.locator(".widget-slider .widget-readout").first.inner_text().strip() == str(last)
    page.close()


def test_rect_k_slider_re_measures_the_cached_updates(lab, browser):
    from helpers import Regularizer
    from helpers.report.sliders import ablation_readout, metrics_at
    from helpers.runs import experiments, shared_model

    params = _prepare("03_rect_ablation", lab[2])
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    _open_and_run_all(page, lab, "03_rect_ablation")
    method = params["methods"][0]  # the slider opens on the first method
    loaded = shared_model(params["model"])
    requests, updates, refs = experiments.ablation_inputs(
        params["model"], method, n=params["slider_edits"], seed=params["seed"], hparams=params["hparams"].get(method),
        store=OUT_DIR / "results" / "edits.jsonl")

    def expected(k):
        df = metrics_at(*loaded, requests, updates, refs, Regularizer("rect", k))
        return f"{method} + " + ablation_readout("rect", k, df)

    assert page.locator(READOUT).first.inner_text() == expected(0.4)
    png_before = _shot(page, "03_rect_ablation_before")
    times = []
    for key, k in (("ArrowLeft", 0.35), ("Home", 0.05)):  # one step down, then to the smallest k
        before, after, seconds = _move(page, 0, key)
        assert after == expected(k) != before
        times.append(seconds)
    assert _shot(page, "03_rect_ablation_after") != png_before
    _record("03_rect_ablation.k_slider_s", max(times))
    page.close()

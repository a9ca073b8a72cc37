"""metaq_utils.store.progress: plain lines when the output is not a terminal, tqdm's bar on one."""
import io
import subprocess
import sys
import time

from metaq_utils.store.progress import PlainTqdm, is_terminal, tqdm, trange


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_outside_jupyter_the_wrapper_is_the_plain_line_class():
    assert tqdm is PlainTqdm and hasattr(tqdm, "write")
    assert not is_terminal(io.StringIO()) and is_terminal(FakeTerminal())


def test_plain_lines_at_the_interval_and_a_final_line_no_carriage_returns():
    out = io.StringIO()
    for _ in tqdm(range(12), desc="C_Q sweep", file=out, plain_interval=0.05):
        time.sleep(0.01)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 2 <= len(lines) <= 7, lines                  # some lines on the way, not one per step
    assert all(line.startswith("C_Q sweep: ") for line in lines)
    assert lines[-1].startswith("C_Q sweep: 12/12 (100%) [")
    assert len(set(lines)) == len(lines)                # never the same line twice


def test_no_line_at_the_start_and_a_long_interval_gives_one_final_line():
    out = io.StringIO()
    bar = tqdm(total=500, desc="x", file=out, plain_interval=3600)
    assert out.getvalue() == ""
    for _ in range(500):
        bar.update()
    bar.close()
    assert out.getvalue().splitlines() == [out.getvalue().strip()]
    assert out.getvalue().startswith("x: 500/500 (100%)")


def test_a_bar_not_kept_ends_silently_and_write_still_works():
    out = io.StringIO()
    for _ in tqdm(range(50), desc="epoch 1/2", leave=False, file=out, plain_interval=3600):
        pass
    tqdm.write("epoch   1  loss 0.1", file=out)
    assert out.getvalue() == "epoch   1  loss 0.1\n"
    out = io.StringIO()
    for _ in trange(3, file=out):                       # no description, no total-less surprises
        pass
    for _ in tqdm(iter(range(4)), file=out, desc="it"):
        pass
    assert out.getvalue().splitlines()[0].startswith("3/3 (100%) [")
    assert out.getvalue().splitlines()[1].startswith("it: 4 [")


def test_on_a_terminal_it_is_tqdm_bar():
    out = FakeTerminal()
    for _ in tqdm(range(5), desc="bar", file=out, mininterval=0):
        pass
    assert "\r" in out.getvalue() and "5/5" in out.getvalue()


def test_a_redirected_process_writes_plain_lines(tmp_path):
    code = ("import time\nfrom metaq_utils.store.progress import tqdm\n"
            "for _ in tqdm(range(6), desc='job'):\n    time.sleep(0.1)\n")
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], stderr=f, check=True,
                       env={"METAQ_PROGRESS_INTERVAL": "0.25", "PATH": "/usr/bin:/bin"})
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert 2 <= len(lines) <= 4 and lines[-1].startswith("job: 6/6 (100%)"), lines

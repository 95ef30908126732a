import io

from pipelines.progress import duration, progress_line, stage_progress, start_line


def test_durations_read_to_the_second():
    assert duration(0) == "0m00s"
    assert duration(59.6) == "1m00s"
    assert duration(725) == "12m05s"
    assert duration(3727) == "1h02m07s"


def test_a_line_says_how_far_how_long_and_what_is_left_at_this_pace():
    # 300 of 1,000 steps done, 100 of them by this process in 50 s: 700 more take 350 s
    assert (
        progress_line("sft loss 0.512", 300, 1000, 50.0, 100)
        == "sft loss 0.512: 300/1000 (30%), 0m50s so far, ~5m50s left"
    )
    assert progress_line("rlhf gold 0.75", 40, 40, 93.0, 40) == "rlhf gold 0.75: 40/40 (100%), 1m33s so far"
    assert progress_line("sft", 0, 10, 0.0, 0) == "sft: 0/10 (0%), 0m00s so far"


def test_the_first_line_says_whether_the_loop_starts_resumes_or_has_nothing_left():
    assert start_line("sft", 400, 0) == "sft: 400 steps"
    assert start_line("sft", 400, 120) == "sft: resuming at 120/400"
    assert start_line("sft", 400, 400) == "sft: all 400 steps done before"


class Clock:
    def __init__(self, times: list[float]):
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def test_without_a_terminal_it_logs_a_line_a_minute_and_the_last_step():
    log = io.StringIO()  # not a terminal, like `make run > run.log` or docker compose logs
    clock = Clock([0.0, 10.0, 62.0, 70.0, 132.0, 140.0])  # start, then one reading per step
    with stage_progress("sft", 7, completed=2, stream=log, clock=clock) as advance:
        for loss in (0.9, 0.8, 0.7, 0.6, 0.5):
            advance(f"sft loss {loss}")
    assert log.getvalue().splitlines() == [
        "sft: resuming at 2/7",
        "sft loss 0.8: 4/7 (57%), 1m02s so far, ~1m33s left",
        "sft loss 0.6: 6/7 (85%), 2m12s so far, ~0m33s left",
        "sft loss 0.5: 7/7 (100%), 2m20s so far",
    ]


def test_on_a_terminal_the_bar_draws_instead_of_lines():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with stage_progress("sft", 3, stream=screen) as advance:
        for _ in range(3):
            advance("sft loss 0.1")
    assert screen.getvalue() == ""  # rich's live bar draws on its own console

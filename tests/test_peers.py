"""The links between a server's processes (:mod:`kiln.realtime.peers`, and a worker's
:class:`~kiln.workers.WriteLink` on them), over real socket pairs."""

from __future__ import annotations

import asyncio
import gc
import pickle
import socket
from pathlib import Path
from typing import Any

from kiln.app import load_app
from kiln.config import load_config
from kiln.errors import InternalServerError, NotFound
from kiln.realtime.peers import Frame, Peers
from kiln.spawned import _Answers, serve_writes
from kiln.storage.operations import Put, WriteResult
from kiln.storage.writer import Receipt
from kiln.workers import WriteLink


class Inbox:
    """What one end of the links received, and which links it saw end."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, Frame]] = []
        self.lost: list[int] = []
        self.changed = asyncio.Event()

    def frame(self, link: int, frame: Frame) -> None:
        self.frames.append((link, frame))
        self.changed.set()

    def ended(self, link: int) -> None:
        self.lost.append(link)
        self.changed.set()

    async def until(self, done: Any, timeout: float = 5.0) -> None:
        """Wait until ``done()`` holds."""
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()


async def linked() -> tuple[Peers, Peers, Inbox]:
    """A sender and a receiver over one socket pair, both reading; the receiver's inbox."""
    ours, theirs = socket.socketpair()
    sender, receiver = Peers([ours]), Peers([theirs])
    inbox = Inbox()
    await sender.start(lambda _link, _frame: None, lambda _link: None)
    await receiver.start(inbox.frame, inbox.ended)
    return sender, receiver, inbox


def test_frames_arrive_whole_in_order_and_the_end_is_seen() -> None:
    """Many frames sent in one turn of the loop (one write) arrive whole and in order, large
    ones too; closing one end is seen at the other."""

    async def main() -> None:
        sender, receiver, inbox = await linked()
        big = "x" * 1_000_000
        for n in range(200):
            assert sender.send(["message", n, big if n == 100 else n])
        await inbox.until(lambda: len(inbox.frames) == 200)
        assert [frame[1] for _link, frame in inbox.frames] == list(range(200))
        assert inbox.frames[100][1] == ["message", 100, big]
        sender.send(["durable", "data", 7])
        sender.close()  # the frame queued before the close still goes out
        await inbox.until(lambda: inbox.lost == [0])
        assert inbox.frames[-1] == (0, ["durable", "data", 7])
        receiver.close()

    asyncio.run(main())


def test_a_hub_relays_only_the_kinds_it_is_told_to_the_other_links() -> None:
    """The hub hands every frame to its handler with the link it came on, and passes the
    relayed kinds on to every other link, not back to the sender."""

    async def main() -> None:
        pairs = [socket.socketpair() for _ in range(3)]
        hub = Peers([hub_end for hub_end, _ in pairs], relay=frozenset({"message"}))
        at_hub = Inbox()
        await hub.start(at_hub.frame, at_hub.ended)
        spokes, inboxes = [], []
        for _, end in pairs:
            inbox = Inbox()
            spoke = Peers([end])
            await spoke.start(inbox.frame, inbox.ended)
            spokes.append(spoke)
            inboxes.append(inbox)
        spokes[0].send(["message", "hello"])
        spokes[0].send(["job", 1])
        await at_hub.until(lambda: len(at_hub.frames) == 2)
        assert at_hub.frames == [(0, ["message", "hello"]), (0, ["job", 1])]
        for inbox in inboxes[1:]:
            await inbox.until(lambda inbox=inbox: len(inbox.frames) == 1)
            assert inbox.frames == [(0, ["message", "hello"])]
        hub.send(["done", 1], 0)  # to one link only
        await inboxes[0].until(lambda: len(inboxes[0].frames) == 1)
        assert inboxes[0].frames == [(0, ["done", 1])]
        await asyncio.sleep(0.05)
        assert all(len(inbox.frames) == 1 for inbox in inboxes[1:])  # no job, no done
        for spoke in spokes:
            spoke.close()
        await at_hub.until(lambda: sorted(at_hub.lost) == [0, 1, 2])
        assert hub.links == 0

    asyncio.run(main())


def test_a_frame_that_cannot_be_encoded_is_refused_and_nothing_is_sent() -> None:
    """``send`` answers False for a value MessagePack cannot hold; the link goes on."""

    async def main() -> None:
        sender, receiver, inbox = await linked()
        assert not sender.send(["message", object()])
        assert sender.send(["message", "after"])
        await inbox.until(lambda: len(inbox.frames) == 1)
        assert inbox.frames == [(0, ["message", "after"])]
        sender.close()
        receiver.close()

    asyncio.run(main())


def test_jobs_of_one_turn_travel_together_and_one_that_cannot_fails_alone() -> None:
    """A worker's link (:class:`WriteLink`) sends the jobs forwarded in one turn of its loop
    as one frame; a job holding a value pickle cannot take is failed alone, at once; each
    answer in a ``done`` frame reaches its own job."""

    async def main() -> None:
        ours, theirs = socket.socketpair()
        link = WriteLink(ours, lambda _frame: None, lambda: None)
        await link.start()
        write_process = Peers([theirs])
        inbox = Inbox()
        await write_process.start(inbox.frame, inbox.ended)
        answers: dict[str, tuple[Any, BaseException | None]] = {}

        def answer(name: str) -> Any:
            return lambda receipt, error: answers.__setitem__(name, (receipt, error))

        link.forward("data", [Put("Dog", 1, {"name": "one"})], "ann", answer("first"))
        link.forward("data", [Put("Dog", 2, {"name": lambda: 0})], None, answer("unpicklable"))
        link.forward("data", [Put("Dog", 3, {"name": "three"})], None, answer("last"))
        await inbox.until(lambda: len(inbox.frames) == 1)
        _link, (kind, numbers, payloads) = inbox.frames[0]
        assert kind == "jobs" and len(numbers) == 2
        assert [pickle.loads(payload) for payload in payloads] == [
            ("data", [Put("Dog", 1, {"name": "one"})], "ann"),
            ("data", [Put("Dog", 3, {"name": "three"})], None),
        ]
        receipt, error = answers.pop("unpicklable")
        assert receipt is None and isinstance(error, InternalServerError)
        assert "cannot go to the write process" in error.detail
        assert answers == {}  # the others wait for their answers
        done = [(Receipt([], 7), None), (None, NotFound("Dog 3 does not exist"))]
        write_process.send(["done", numbers, pickle.dumps(done)], 0)
        async with asyncio.timeout(5):
            while len(answers) < 2:
                await asyncio.sleep(0.01)
        assert answers["first"] == (Receipt([], 7), None)
        assert isinstance(answers["last"][1], NotFound)
        link.close()
        write_process.close()

    asyncio.run(main())


def test_the_write_process_answers_after_the_durable_frame_that_covers_them(
    tmp_path: Path,
) -> None:
    """The write process (:func:`serve_writes`) answers the jobs of a ``jobs`` frame in
    ``done`` frames, each after a ``durable`` frame that covers its versions, however
    the commits and their answers interleave; the worker's ``bye`` then stops it cleanly."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "schema.graphql").write_text(
        "type Dog @table @export { id: Int @primaryKey name: String }\n"
    )
    config = load_config(app_dir, env={}, overrides={"storage.path": str(tmp_path / "data")})
    app = load_app(app_dir, config, progress=lambda *_: None)

    async def main() -> bool:
        worker_end, process_end = socket.socketpair()
        serving = asyncio.create_task(serve_writes(app, [process_end]))
        worker = Peers([worker_end])
        inbox = Inbox()
        await worker.start(inbox.frame, inbox.ended)
        sent = 0
        for turn in range(30):  # a frame per turn, as a worker's link sends them
            jobs = [
                pickle.dumps(("data", [Put("Dog", sent + n, {"name": f"dog {turn}"})], None))
                for n in range(10)
            ]
            worker.send(["jobs", list(range(sent, sent + 10)), jobs])
            sent += 10
            await asyncio.sleep(0)
        answered: dict[int, Any] = {}
        await inbox.until(
            lambda: sum(len(f[1]) for _l, f in inbox.frames if f[0] == "done") == sent
        )
        durable = 0
        for _link, frame in inbox.frames:
            if frame[0] == "durable":
                assert frame[1] == "data"
                durable = max(durable, frame[2])
                continue
            assert frame[0] == "done"
            for number, (receipt, error) in zip(frame[1], pickle.loads(frame[2]), strict=True):
                assert error is None
                assert receipt.results[0].version <= durable, (
                    "an answer came before its durable frame"
                )
                answered[number] = receipt
        assert sorted(answered) == list(range(sent))
        worker.send(["bye"])
        worker.close()
        return await serving

    try:
        assert asyncio.run(main()) is True
        with app.databases["data"].read() as txn:
            assert app.databases["data"].tables["Dog"].count(txn) == 300
    finally:
        gc.unfreeze()  # serve_writes froze this test process's objects
        app.close()


def test_a_job_the_write_process_cannot_take_fails_alone(tmp_path: Path) -> None:
    """A job that does not unpickle, has the wrong shape or names no database gets its own
    500; the other jobs of its frame are made, and ``bye`` still stops the write process."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "schema.graphql").write_text("type Dog @table { id: Int @primaryKey }\n")
    config = load_config(app_dir, env={}, overrides={"storage.path": str(tmp_path / "data")})
    app = load_app(app_dir, config, progress=lambda *_: None)

    async def main() -> tuple[bool, dict[int, Any]]:
        worker_end, process_end = socket.socketpair()
        serving = asyncio.create_task(serve_writes(app, [process_end]))
        worker = Peers([worker_end])
        inbox = Inbox()
        await worker.start(inbox.frame, inbox.ended)
        payloads = [
            pickle.dumps(("data", [Put("Dog", 1, {})], None)),
            b"not a pickle",
            pickle.dumps(("data", [Put("Dog", 2, {})])),  # no user
            pickle.dumps(("nowhere", [Put("Dog", 3, {})], None)),
            pickle.dumps(("data", [Put("Dog", 4, {})], None)),
        ]
        worker.send(["jobs", [0, 1, 2, 3, 4], payloads])
        answers: dict[int, Any] = {}

        def count() -> int:
            for _link, frame in inbox.frames:
                if frame[0] == "done":
                    answers.update(zip(frame[1], pickle.loads(frame[2]), strict=True))
            return len(answers)

        await inbox.until(lambda: count() == 5)
        worker.send(["bye"])
        worker.close()
        return await serving, answers

    try:
        clean, answers = asyncio.run(main())
        assert clean is True
        assert answers[0][1] is None and answers[4][1] is None
        for number in (1, 2, 3):
            receipt, error = answers[number]
            assert receipt is None and isinstance(error, InternalServerError), answers[number]
            assert error.detail.startswith("the write could not be made")
        with app.databases["data"].read() as txn:
            assert app.databases["data"].tables["Dog"].count(txn) == 2
    finally:
        gc.unfreeze()
        app.close()


def test_answers_given_after_a_second_commit_wait_for_its_durable_frame() -> None:
    """When two commits are on disk before the write process's loop runs, the answers of
    the second still follow its own ``durable`` frame, not the first one's."""

    async def main() -> None:
        process, worker, inbox = await linked()
        answers = _Answers(asyncio.get_running_loop(), process)
        first, second = answers.to(0, 1), answers.to(0, 2)
        answers.durable("data", 5)  # as two sync threads' turns would, before the loop runs
        first(Receipt([], 1), None)
        answers.durable("data", 9)
        second(Receipt([], 2), None)
        await inbox.until(lambda: len(inbox.frames) == 4)
        assert [frame[:2] for _link, frame in inbox.frames] == [
            ["durable", "data"],
            ["done", [1]],
            ["durable", "data"],
            ["done", [2]],
        ]
        assert [frame[2] for _link, frame in inbox.frames if frame[0] == "durable"] == [5, 9]
        await answers.all_sent()
        worker.close()
        process.close()

    asyncio.run(main())


def test_an_answer_that_cannot_travel_is_a_500_and_the_others_arrive() -> None:
    """A receipt that pickle cannot take (a value of the app's own in the record) becomes a
    500 saying the write was made; the other answers of its frame arrive intact."""

    async def main() -> None:
        process, worker, inbox = await linked()
        answers = _Answers(asyncio.get_running_loop(), process)
        good, bad = answers.to(0, 1), answers.to(0, 2)
        good(Receipt([], 1), None)
        bad(Receipt([WriteResult(2, 9, {"id": 2, "hook": lambda: 0}, True)], 2), None)
        await inbox.until(lambda: len(inbox.frames) == 1)
        _link, (kind, numbers, payload) = inbox.frames[0]
        assert (kind, numbers) == ("done", [1, 2])
        first, second = pickle.loads(payload)
        assert first == (Receipt([], 1), None)
        receipt, error = second
        assert receipt is None and isinstance(error, InternalServerError)
        assert error.detail.startswith("the write was made; its answer cannot")
        await answers.all_sent()
        worker.close()
        process.close()

    asyncio.run(main())

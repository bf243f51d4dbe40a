"""The runtime the CLI and the API share: start a turn, stream it, list pending interrupts, resume, continue.

LangGraph facts this module guards (see LangGraph's "human-in-the-loop" docs,
https://langchain-ai.github.io/langgraph/concepts/human_in_the_loop/):
``Command(resume=...)`` on an unknown thread silently starts the graph from scratch, and a plain resume with two
pending interrupts raises; so every resume checks ``aget_state(...).interrupts`` first, validates the answer against
the interrupt's typed schema, and resumes by interrupt id.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from core.contract import load_for as load_contract_for
from core.db import Database
from core.llm import LLM
from core.settings import Settings
from core.tracing import tracing_callbacks
from graphs.context import Context
from infra.forge.factory import make_forge
from models.enums import AccessRole
from models.tables import Project, ThreadRecord
from runtime.answers import CANCEL_ANSWERS, Answer, answer_value
from runtime.errors import NotAllowed, RuntimeInputError, ThreadStateConflict, UnknownProject, UnknownThread
from runtime.events import RunEvent, task_event
from runtime.listing import (
    Pending,
    ThreadPage,
    ThreadView,
    list_threads,
    run_abandoned,
    start_run,
    take_notice,
    thread_record,
    touch,
    write_index,
)
from runtime.multitask import (
    DEFAULT_STRATEGY,
    LOCK_WAIT_S,
    Strategy,
    check_rollback_base,
    drained_text,
    hold_thread,
    parse_strategy,
    prepare_turn,
    run_control,
)
from runtime.po_graph import DeferredGraph
from runtime.traces import RunKind, RunTrace
from services.approvals import AnswerRefused, check_answer, record_answer
from services.cancel import CancelRefused, cancel_request, request_cancel, settle
from services.deadlines import track as track_deadlines
from services.identities import Identity, record
from services.leases import ensure_default_server
from services.notifications import approval_requested, run_failed, start_delivery
from services.webhook_delivery import settle_deliveries

if TYPE_CHECKING:  # LangGraph is imported when the graph is built (runtime.po_graph), not with this module
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.runtime import RunControl

__all__ = [
    "Answer",
    "NotAllowed",
    "OrchestratorRuntime",
    "Pending",
    "RunEvent",
    "RuntimeInputError",
    "ThreadPage",
    "ThreadStateConflict",
    "ThreadView",
    "UnknownProject",
    "UnknownThread",
    "answer_value",
    "new_thread_id",
]


def new_thread_id() -> str:
    """A fresh thread id, ``t-`` and 12 hex digits."""
    return f"t-{uuid.uuid4().hex[:12]}"


class OrchestratorRuntime:
    """Open with ``async with OrchestratorRuntime(settings) as rt:``; one per process.

    Opening creates the data dir, the tables, the embedded localhost server and the checkpoint saver. The PO graph is
    compiled with that saver on first use (:mod:`runtime.po_graph`): a process that never runs or reads a
    checkpointed thread never imports LangGraph. :meth:`warm_up` starts that build in the background.

    Args:
        settings: the process settings.
        defer_checkpoints: open the checkpoint saver with the graph's first build rather than at start (the API,
            whose first requests need neither); :attr:`graph` then refuses until :meth:`compiled` built it.
    """

    def __init__(self, settings: Settings, *, defer_checkpoints: bool = False) -> None:
        self.settings = settings
        self.db = Database(settings.db_url)
        self.llm = LLM(settings, self.db)
        self.forge = make_forge(settings)
        self._defer_checkpoints = defer_checkpoints
        self._po: DeferredGraph | None = None
        self._controls: set[RunControl] = set()
        self._llms: dict[str, LLM] = {settings.model: self.llm}

    def request_drain(self) -> None:
        """Ask every run in flight to stop after its current superstep (e.g. on SIGTERM): no node is cut short.

        See LangGraph's ``RunControl``; a drained run raises ``GraphDrained`` and resumes with ``continue_run``.
        """
        for control in self._controls:
            control.request_drain()

    async def __aenter__(self) -> OrchestratorRuntime:
        load_contract_for(self.settings)  # a broken contract stops the start, naming its file and line
        self.settings.ensure_data_dir()
        await self.db.migrate()
        await ensure_default_server(self.db, self.settings)
        self._po = DeferredGraph(self.settings)
        if not self._defer_checkpoints:
            await self._po.open_saver()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await settle_deliveries()  # this process's webhook sends end (or go back to pending) before the db closes
        if self._po is not None:
            await self._po.close(*exc)
        await self.db.dispose()

    @property
    def graph(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The PO graph compiled with this runtime's saver; compiled here, blocking, if nothing needed it yet.

        Async code awaits :meth:`compiled` instead, which compiles off the event loop.

        Raises:
            RuntimeError: the runtime is not open, or defers its saver and nothing built the graph yet.
        """
        return self._deferred().now()

    async def compiled(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The PO graph; its first callers wait for one compile in a worker thread (see :mod:`runtime.po_graph`).

        Raises:
            RuntimeError: the runtime is not open. Whatever importing the graphs or compiling raised.
        """
        return await self._deferred().get()

    def warm_up(self) -> None:
        """Start compiling the PO graph in the background (an API right after it starts serving)."""
        self._deferred().warm_up()

    def _deferred(self) -> DeferredGraph:
        if self._po is None:
            raise RuntimeError("the runtime is not open: use `async with OrchestratorRuntime(settings) as rt`")
        return self._po

    def _config(self, thread_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id}}

    def _context(self, thread_id: str, actor: Identity, llm: LLM, run_id: str | None = None) -> Context:
        return Context(
            settings=llm.settings,
            db=self.db,
            llm=llm,
            forge=self.forge,
            thread_id=thread_id,
            actor=actor.name,
            run_id=run_id,
        )

    def _llm_for(self, recorded: str | None) -> LLM:
        """The model client of a resumed run: the thread's ``recorded`` model, unless this process chose one.

        ``--model`` or ``ORCH_MODEL`` (an explicit choice) wins; with neither, a run resumes on the model it started
        with. Per-role settings (``ORCH_MODEL_PO``...) still apply. One client per model, made on first use.
        """
        if recorded is None or "model" in self.settings.model_fields_set:
            return self.llm
        if recorded not in self._llms:
            self._llms[recorded] = LLM(self.settings.model_copy(update={"model": recorded}), self.db)
        return self._llms[recorded]

    async def thread_exists(self, thread_id: str) -> bool:
        """Whether the thread has a checkpoint."""
        return (await (await self.compiled()).aget_state(self._config(thread_id))).created_at is not None

    async def pending(self, thread_id: str, actor: Identity | None = None) -> list[Pending]:
        """Pending interrupts of a thread (subgraphs included); with ``actor``, only if the thread is visible to them.

        Raises:
            RuntimeInputError: unknown thread (or another owner's, to an ``actor`` who sees only their own).
        """
        if actor is not None:
            await self._check_visible(thread_id, actor)
        state = await (await self.compiled()).aget_state(self._config(thread_id))
        if state.created_at is None:
            raise UnknownThread(f"unknown thread {thread_id!r}: list threads to see the known ones")
        return [Pending(id=i.id, payload=dict(i.value)) for i in state.interrupts]

    async def start_turn(
        self,
        text: str,
        thread_id: str | None = None,
        *,
        actor: Identity,
        multitask: Strategy | str = DEFAULT_STRATEGY,
        wait_s: float = LOCK_WAIT_S,
    ) -> AsyncIterator[RunEvent]:
        """Send the person's ``text`` to the PO on ``thread_id`` (a new thread if None) and stream the run.

        ``actor`` is who speaks: a new thread is theirs, and what the run changes names them. ``multitask`` says
        what happens when another run of the thread is going (``reject``, ``enqueue``, ``interrupt``,
        ``rollback``: LangGraph Platform's double-texting strategies, see :mod:`runtime.multitask`); ``wait_s``
        bounds the wait for that run (seconds). A notice left on the thread
        (what happened while nobody watched) comes first, as a ``message`` from node ``system``.

        Raises:
            RuntimeInputError: empty text, an unknown strategy. ThreadStateConflict: the thread is archived, waits
                for an answer to an interrupt (whatever the strategy), its last run stopped mid-way (a new message
                would abandon it; an ``interrupt`` of a run in progress may, and so may a message after a cancel of
                that run, :mod:`runtime.thread_admin`), another run is going (``reject``), or it did not end or stop
                within ``wait_s``.
        """
        if not text.strip():
            raise RuntimeInputError("say something: the message is empty")
        strategy = parse_strategy(multitask)
        thread_id = thread_id or new_thread_id()

        async def before_wait() -> None:  # refusals due before a running run is asked anything
            await self._check_visible(thread_id, actor, new_ok=True)
            if strategy == "rollback":
                rec = await thread_record(self.db, thread_id)
                await check_rollback_base(await self.compiled(), thread_id, rec.run_base_checkpoint if rec else None)

        hint = " (or send with multitask_strategy enqueue, interrupt or rollback)"
        async with hold_thread(
            self.settings.data_dir, thread_id, strategy, hint=hint, wait_s=wait_s, before_wait=before_wait
        ) as waited:
            await self._check_visible(thread_id, actor, new_ok=True)
            rec = await thread_record(self.db, thread_id)
            base = rec.run_base_checkpoint if rec else None
            turn = await prepare_turn(
                await self.compiled(), thread_id, text, strategy=strategy, waited=waited, base=base, record=rec
            )
            await self._touch(thread_id, title=text, owner=actor.name)
            if notice := await take_notice(self.db, thread_id):
                yield RunEvent(kind="message", node="system", text=notice)
            async for ev in self._stream(turn.input, thread_id, actor, fork_from=turn.checkpoint_id, kind="message"):
                yield ev

    async def resume(
        self, thread_id: str, answer: Answer, interrupt_id: str | None = None, *, actor: Identity
    ) -> AsyncIterator[RunEvent]:
        """Answer a pending interrupt as ``actor`` and stream the rest of the run; the answer goes on the record.

        Raises:
            RuntimeInputError: unknown thread, nothing pending, several pending and no ``interrupt_id``, an unknown
                ``interrupt_id``, or an answer of the wrong shape. NotAllowed: ``actor``'s role may not answer this
                kind of question (see :mod:`services.approvals`), or asked for the change it would approve. Nothing
                is changed in any of these cases.
        """
        await self.pending(thread_id, actor)  # an unknown thread fails here, before a lock file is made for it
        async with self._exclusive(thread_id):
            pending = await self.pending(thread_id)
            if not pending:
                raise ThreadStateConflict(f"thread {thread_id} has nothing pending to answer")
            if interrupt_id is None and len(pending) > 1:
                ids = ", ".join(f"{p.id} ({p.payload.get('kind')})" for p in pending)
                raise RuntimeInputError(f"thread {thread_id} has {len(pending)} pending questions; pick one: {ids}")
            chosen = next((p for p in pending if interrupt_id in (None, p.id)), None)
            if chosen is None:
                raise RuntimeInputError(f"no pending interrupt {interrupt_id!r} on thread {thread_id}")
            value = answer_value(chosen.payload, answer, by=actor.name)
            try:
                await check_answer(self.db, self.settings, chosen.payload, value, actor)
            except AnswerRefused as exc:
                raise NotAllowed(str(exc)) from exc
            await record_answer(self.db, chosen.payload, value, actor, thread_id)
            await self._touch(thread_id)
            from langgraph.types import Command  # loaded with the graph (pending() above needed it)

            async for ev in self._stream(
                Command(resume={chosen.id: value}), thread_id, actor, same_model=True, kind="resume"
            ):
                yield ev

    async def continue_run(self, thread_id: str, *, actor: Identity) -> AsyncIterator[RunEvent]:
        """Finish a run that stopped mid-way (crash, kill -9) from its last checkpoint.

        Raises:
            RuntimeInputError: unknown thread, the thread waits for an answer, nothing is left to run, or the
                stopped run was cancelled (``thread cancel``: a new message starts afresh instead).
        """
        await self.pending(thread_id, actor)  # an unknown thread fails here, before a lock file is made for it
        async with self._exclusive(thread_id):
            if await self.pending(thread_id):
                raise ThreadStateConflict(
                    f"thread {thread_id} waits for an answer to its pending question, not a restart"
                )
            state = await (await self.compiled()).aget_state(self._config(thread_id))
            if not state.next:
                raise ThreadStateConflict(f"thread {thread_id} has no unfinished run")
            if run_abandoned(await thread_record(self.db, thread_id)):
                raise ThreadStateConflict(
                    f"thread {thread_id}'s stopped run was cancelled, so it is not continued: a new message starts "
                    "afresh from the conversation"
                )
            async for ev in self._stream(None, thread_id, actor, same_model=True, kind="continue"):
                yield ev

    async def cancel_project(self, name: str, *, actor: Identity, reason: str) -> AsyncIterator[RunEvent]:
        """Cancel a project's work in flight as ``actor`` (approver) and stream what that ran.

        The request goes on the record first (:func:`services.cancel.request_cancel`), then the project's thread is
        driven to its end according to where it is:

        - waiting for an answer: answered as the cancel (``stop`` to guidance or a spent budget, ``reject`` to a
          deploy approval, a retry of a resource wait that then ends), through the same checks as any answer;
        - stopped mid-run (a crash, a model error): continued, unless that run was cancelled (``thread cancel``);
          every engineering round, agent step and deploy reads the request first, so it ends without another model
          call;
        - running in another process (its lock is held): nothing more here; that run stops before its next model
          call and settles the project itself;
        - no thread, or a finished one: the project is settled at once.

        Either way the project ends ``cancelled`` with its port released, or back to ``active`` when the cancelled
        work was an update of a live release. The last event is ``cancel``: ``text`` says what happened and
        ``payload`` is ``{"project", "status", "stopped", "thread_id"}`` (``stopped`` False: a run elsewhere will
        stop).

        Raises:
            NotAllowed: ``actor`` is not an approver. UnknownProject: no such project. ThreadStateConflict: nothing in
                flight to cancel (its status says why). Nothing is changed in these cases.
        """
        if not actor.may(AccessRole.approver):
            raise NotAllowed(f"cancelling a project needs the approver role; {actor.name} has {actor.role.value}")
        try:
            project = await request_cancel(self.db, name, actor=actor.name, reason=reason)
        except LookupError as exc:
            raise UnknownProject(str(exc)) from exc
        except CancelRefused as exc:
            raise ThreadStateConflict(str(exc)) from exc
        assert project.id is not None
        thread_id = project.thread_id
        run: AsyncIterator[RunEvent] | None = None
        if thread_id is not None and await self.thread_exists(thread_id):
            try:
                async with self._exclusive(thread_id):
                    pending = await self.pending(thread_id)
                    mid_run = bool((await (await self.compiled()).aget_state(self._config(thread_id))).next)
                    mid_run = mid_run and not run_abandoned(await thread_record(self.db, thread_id))
            except ThreadStateConflict:
                yield self._cancel_event(project.name, project.status.value, thread_id, stopped=False)
                return
            if pending:
                answer = CANCEL_ANSWERS.get(str(pending[0].payload.get("kind")), Answer("reject", reason))
                run = self.resume(thread_id, answer, pending[0].id, actor=actor)
            elif mid_run:
                run = self.continue_run(thread_id, actor=actor)
        if run is not None:
            async for ev in run:
                yield ev
        standing = await cancel_request(self.db, project.id)
        if standing is not None:  # nothing ran that settled it (no thread, a finished one, a run that went another way)
            await settle(self.db, project.id, actor=standing[0], reason=standing[1], thread_id=thread_id)
        async with self.db.session() as s:
            now = await s.get(Project, project.id)
        assert now is not None
        yield self._cancel_event(project.name, now.status.value, thread_id, stopped=True)

    @staticmethod
    def _cancel_event(name: str, status: str, thread_id: str | None, *, stopped: bool) -> RunEvent:
        if stopped:
            text = f"{name} is {status}: its work has stopped"
        else:
            text = (
                f"cancel of {name} asked: a run of thread {thread_id} is going elsewhere; it stops before its next "
                "model call and leaves the project cancelled"
            )
        payload = {"project": name, "status": status, "stopped": stopped, "thread_id": thread_id}
        return RunEvent(kind="cancel", text=text, payload=payload)

    @asynccontextmanager
    async def _exclusive(self, thread_id: str) -> AsyncIterator[None]:
        """Hold the thread's lock from the state check to the end of the run, or refuse at once.

        An exclusive ``flock`` on ``<data_dir>/threads/<hash>.lock`` (:func:`runtime.multitask.hold_thread`): it
        excludes a second request in this process and any other process on this machine (the CLI, the API, the
        sync's provisioner), and the kernel releases it when a holder dies. Not a lock across machines: that needs
        the database's (PostgreSQL advisory locks).

        Raises:
            ThreadStateConflict: another run of the thread is going.
        """
        async with hold_thread(self.settings.data_dir, thread_id):
            yield

    async def _stream(
        self,
        value: Any,
        thread_id: str,
        actor: Identity,
        *,
        fork_from: str | None = None,
        same_model: bool = False,
        kind: RunKind = "message",
    ) -> AsyncIterator[RunEvent]:
        """Run the graph on ``thread_id`` and stream its events; the thread index says "mid-run" until it ends.

        ``fork_from``: a checkpoint id to run from instead of the latest (a rollback); ``same_model``: a resumed
        run, on the thread's recorded model (:meth:`_llm_for`). The index records the checkpoint the run starts
        from and its model; a newer message may stop the run between supersteps (``multitask.run_control``).
        ``kind`` names the entry point; the run, its nodes and how it ends are stored (:mod:`runtime.traces`).
        """
        graph = await self.compiled()
        from langgraph.errors import GraphDrained  # loaded with the graph

        rec = await thread_record(self.db, thread_id)
        llm = self._llm_for(rec.model if same_model and rec else None)
        config = self._config(thread_id)
        base = fork_from or (await graph.aget_state(config)).config.get("configurable", {}).get("checkpoint_id")
        await start_run(self.db, thread_id, base=base or "", model=llm.settings.model)
        trace = await RunTrace.begin(self.db, thread_id, kind, actor.name, llm.settings.model)
        if fork_from:
            config["configurable"]["checkpoint_id"] = fork_from
        config["callbacks"] = tracing_callbacks(self.settings, thread_id, actor.name, llm.settings.model, value)
        control = run_control(self.settings.data_dir, thread_id)
        self._controls.add(control)
        try:
            async for ev in self._stream_steps(value, config, actor, control, llm, trace):
                yield ev
        except GraphDrained:
            await trace.finish("drained")
            yield RunEvent(kind="drained", text=drained_text(control, thread_id))
            return
        except Exception as exc:  # a node failed (a model error...): on the project's trail, then to the caller
            await trace.finish("failed", exc)
            await self._record_failure(thread_id, exc, actor)
            if await run_failed(self.db, thread_id=thread_id, error=f"{type(exc).__name__}: {exc}"):
                start_delivery(self.db, self.settings)
            raise
        except BaseException as exc:  # cancelled mid-run (Ctrl-C, shutdown): continue_run finishes it
            await trace.finish("failed", f"stopped mid-run ({type(exc).__name__}); continue the thread to finish it")
            raise
        finally:
            self._controls.discard(control)
        pending = await self.pending(thread_id)
        await trace.finish("interrupted" if pending else "done")
        await write_index(self.db, thread_id, pending=pending, stopped_mid_run=False)
        await approval_requested(self.db, thread_id, [(p.id, p.payload) for p in pending])
        await track_deadlines(self.db, self.settings, thread_id, [(p.id, p.payload) for p in pending])
        start_delivery(self.db, self.settings)  # this run's events (approvals, deploys, incidents), in the background
        for p in pending:
            yield RunEvent(kind="interrupt", payload=p.payload, interrupt_id=p.id)
        await self._touch(thread_id)
        yield RunEvent(kind="done")

    async def _stream_steps(
        self, value: Any, config: RunnableConfig, actor: Identity, control: RunControl, llm: LLM, trace: RunTrace
    ) -> AsyncIterator[RunEvent]:
        from langchain_core.messages import AIMessage  # loaded with the graph

        started: dict[str, float] = {}
        async for ns, mode, data in (await self.compiled()).astream(
            value,
            config,
            context=self._context(config["configurable"]["thread_id"], actor, llm, trace.run_id),
            stream_mode=["tasks", "updates"],
            subgraphs=True,
            durability="sync",
            control=control,
        ):
            path = tuple(part.split(":")[0] for part in ns)
            assert isinstance(data, dict)
            if mode == "tasks":
                await trace.task(data, path)  # the stored timeline (runtime.traces)
                ev = self._task_event(data, path, started)
                if ev is not None:
                    yield ev
            elif not ns:
                for node, update in data.items():
                    messages = update.get("messages", []) if isinstance(update, dict) else []
                    for msg in messages:
                        if isinstance(msg, AIMessage) and msg.content:
                            yield RunEvent(kind="message", node=node, text=str(msg.content))

    _task_event = staticmethod(task_event)

    async def _record_failure(self, thread_id: str, exc: Exception, actor: Identity) -> None:
        """Put a failed run on the trail of the project its thread works on (``run_failed``).

        A project left in a working status then says why; the checkpoint before the failing node is kept for
        ``continue_run``.
        """
        async with self.db.session() as s:
            project = (await s.exec(select(Project).where(Project.thread_id == thread_id))).first()
            if project is None or project.id is None:
                return
            await record(
                s,
                subject_type="project",
                subject_id=project.id,
                action="run_failed",
                reason=f"{project.status.value}: {type(exc).__name__}: {str(exc)[:400]}; resume {thread_id} to retry",
                actor=actor.name,
                thread_id=thread_id,
            )

    async def _touch(self, thread_id: str, title: str | None = None, owner: str | None = None) -> None:
        await touch(self.db, thread_id, title=title, owner=owner)

    async def create_thread(self, owner: Identity) -> str:
        """A new thread id, recorded as ``owner``'s; nothing runs until a message is posted to it."""
        thread_id = new_thread_id()
        await self._touch(thread_id, owner=owner.name)
        return thread_id

    async def _check_visible(self, thread_id: str, actor: Identity, *, new_ok: bool = False) -> None:
        """Refuse another owner's thread as unknown (a 404, so ids cannot be probed).

        Raises:
            UnknownThread: the thread has a record ``actor`` may not see, or (unless ``new_ok``) none at all.
        """
        async with self.db.session() as s:
            row = await s.get(ThreadRecord, thread_id)
        if row is None and new_ok and not await self.thread_exists(thread_id):
            return
        if not actor.sees(row.owner if row else None):
            raise UnknownThread(f"unknown thread {thread_id!r}: list threads to see the known ones")

    async def threads(
        self, owner: str | None = None, *, limit: int | None = None, cursor: str | None = None
    ) -> list[ThreadView]:
        """Threads (only ``owner``'s if given), newest first, with their pending interrupts and run state.

        Read from the thread index (:mod:`runtime.listing`); see :meth:`thread_page` for ``limit`` and ``cursor``.
        """
        return (await self.thread_page(owner, limit=limit, cursor=cursor)).threads

    async def thread_page(
        self, owner: str | None = None, *, limit: int | None = None, cursor: str | None = None, archived: bool = False
    ) -> ThreadPage:
        """A page of threads from the index, newest first; threads from before the index are indexed on the way.

        Args:
            owner: only this identity's threads; None for everyone's.
            limit: the page size (1 to 500); None for every thread.
            cursor: the previous page's ``next_cursor``; None for the first page.
            archived: archived threads too (``ThreadView.archived_at`` says which); False leaves them out.

        Raises:
            RuntimeInputError: a limit out of range or a cursor not made by a listing.
        """
        page = await list_threads(self.db, owner=owner, limit=limit, cursor=cursor, archived=archived)
        if not page.unindexed:
            return page
        views = {v.id: v for v in page.threads}
        graph = await self.compiled()
        for thread_id in page.unindexed:
            state = await graph.aget_state(self._config(thread_id))
            pending = [Pending(id=i.id, payload=dict(i.value)) for i in state.interrupts]
            stopped = bool(state.next) and not pending
            await write_index(self.db, thread_id, pending=pending, stopped_mid_run=stopped)
            views[thread_id].pending, views[thread_id].stopped_mid_run = pending, stopped
        page.unindexed = []
        return page

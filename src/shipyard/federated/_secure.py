"""Secure aggregation (Flower's SecAgg+) for a federated run: Flower's own
`SecAggPlusWorkflow` decides each fit round's stages, and on the gRPC transport each stage's
message travels serialised inside a round's fit instruction (a `Grid` over the connected sites'
proxies), where Flower's `secaggplus_mod` answers it at the site.

    secure_fit(run)                       the fit step of every round under SecAgg+
    secure_server(flwr, run, strategy, manager)   Flower's server with that fit step (gRPC)
    secure_step(site, config, contexts)   one stage at a site
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.federated._flower import _Run as Run
    from shipyard.federated._site import Site

__all__ = ["NODE", "SECURE", "identify", "secure_fit", "secure_server", "secure_step"]

SECURE = "shipyard.secagg"  # a SecAgg+ stage's message, serialised, inside a round's instructions
NODE = "shipyard.node"

log = logging.getLogger("shipyard.federated")


def secure_step(site: Site, config: dict[str, Any], contexts: dict[int, Any]) -> bytes:
    """One SecAgg+ stage at a site: the server's message through Flower's `secaggplus_mod`
    (which calls the site's own training at the masking stage), the reply serialised back."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import Context, Message, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
    from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto

    node = int(config[NODE])
    identify(node)
    content = recorddict_from_proto(RecordDictProto.FromString(bytes(config[SECURE])))
    message = Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
    context = contexts.setdefault(node, Context(0, node, {}, RecordDict(), {}))

    def train(incoming: Any, _: Any) -> Any:
        instructions = compat.recorddict_to_fitins(incoming.content, keep_input=True)
        update, rows, metrics = site.fit(
            parameters_to_ndarrays(instructions.parameters), instructions.config, masked=True
        )
        result = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), rows, metrics)
        return Message(compat.fitres_to_recorddict(result, keep_input=True), reply_to=incoming)

    reply = secaggplus_mod(message, context, train)
    return bytes(recorddict_to_proto(reply.content).SerializeToString())


def identify(node: int) -> None:
    """Flower's messages take their run and node from the process's task identity, which its
    own runtimes set; the gRPC transport's server and sites set it here (one run a process)."""
    from flwr.supercore.task_identity import TaskIdentity

    try:
        TaskIdentity.run_id  # noqa: B018 - set already (Flower's simulation engine)
    except RuntimeError:
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = 0
        TaskIdentity.node_id = node


def secure_fit(run: Run) -> Any:
    """The fit step of every round under SecAgg+: the rounds of orders of magnitude (in the
    clear) as Flower's default; the scaled mean and spread and every training round through
    Flower's `SecAggPlusWorkflow`, weights up to the largest site's rows, each coordinate
    quantised within +-1 for the scaled mean and spread and +-`secure_clip` for an update."""
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
    from flwr.server.workflow.default_workflows import default_fit_workflow

    def fit(grid: Any, context: Any) -> None:
        server_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        stage = run.stage(server_round)
        if stage in ("describe", "deviation"):  # on the simulation engine; gRPC's server runs it
            default_fit_workflow(grid, context)
            return
        largest = max((s["train_rows"] for s in run.sites.values()), default=1)
        SecAggPlusWorkflow(
            num_shares=1.0,  # every site holds a share of every other's secrets
            reconstruction_threshold=0.6,  # the masks are removed if 60% of the sites remain
            max_weight=float(largest),
            clipping_range=1.0 if stage in ("mean", "spread") else run.settings.secure_clip,
            timeout=run.settings.round_timeout,
        )(grid, context)

    return fit


def proxy_grid(client_manager: Any, timeout: float | None) -> Any:
    """Flower's `Grid` (what a workflow sends its messages through) over the sites connected to
    the gRPC server: a message to a site goes as a fit instruction carrying it serialised, and
    the site's reply comes back the same way."""
    from concurrent.futures import ThreadPoolExecutor

    from flwr.app import Error, Message
    from flwr.common import Code, FitIns, Parameters
    from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
    from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto
    from flwr.serverapp.grid import Grid

    def exchange(message: Any) -> Any:
        node = int(message.metadata.dst_node_id)
        nodes = {proxy.node_id: proxy for proxy in client_manager.all().values()}
        payload = recorddict_to_proto(message.content).SerializeToString()
        instructions = FitIns(Parameters([], ""), {SECURE: payload, NODE: node})
        try:
            answer = nodes[node].fit(
                instructions, timeout=timeout, group_id=int(message.metadata.group_id or 0)
            )
            if answer.status.code != Code.OK or SECURE not in answer.metrics:
                raise RuntimeError(answer.status.message or "the site's answer has no message")
            content = RecordDictProto.FromString(bytes(answer.metrics[SECURE]))
            return Message(recorddict_from_proto(content), reply_to=message)
        except Exception as error:  # the site went away, timed out or failed: an error reply
            log.warning("site %s: %s", node, error)
            return Message(Error(code=0, reason=str(error)), reply_to=message)

    class ProxyGrid(Grid):
        def __init__(self) -> None:
            self.replies: dict[str, Any] = {}

        def set_run(self, run: Any) -> None:
            self._run = run

        @property
        def run(self) -> Any:
            return self._run

        def create_message(
            self, content: Any, message_type: str, dst_node_id: int, group_id: str,
            ttl: float | None = None,
        ) -> Any:  # fmt: skip
            return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                           group_id=group_id)  # fmt: skip

        def get_node_ids(self) -> list[int]:
            return [int(proxy.node_id) for proxy in client_manager.all().values()]

        def push_messages(self, messages: Any) -> list[str]:
            sent = list(messages)
            with ThreadPoolExecutor(max_workers=max(1, len(sent))) as pool:
                replies = list(pool.map(exchange, sent))
            ids = []
            for index, reply in enumerate(replies):
                key = f"{id(self)}-{len(self.replies)}-{index}"
                self.replies[key] = reply
                ids.append(key)
            return ids

        def pull_messages(self, message_ids: Any) -> list[Any]:
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
            return self.pull_messages(self.push_messages(messages))

    return ProxyGrid()


def secure_server(flwr: Any, run: Run, strategy: Any, client_manager: Any) -> Any:
    """Flower's server, each round's fit run by `secure_fit` over the connected sites."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    fit = secure_fit(run)
    identify(SUPERLINK_NODE_ID)

    class SecureServer(flwr.server.Server):  # type: ignore[misc]
        def fit_round(self, server_round: int, timeout: float | None) -> Any:
            if run.stage(server_round) in ("describe", "deviation"):  # in the clear, as any round
                return super().fit_round(server_round, timeout)
            context = LegacyContext(
                Context(0, 0, {}, RecordDict(), {}), strategy=self.strategy,
                client_manager=self._client_manager,
            )  # fmt: skip
            context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
                {Key.CURRENT_ROUND: server_round}
            )
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                self.parameters, keep_input=True
            )
            fit(proxy_grid(self._client_manager, timeout), context)
            if run.aggregated != server_round:
                return None
            parameters = compat.arrayrecord_to_parameters(
                context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
            )
            return parameters, {}, ([], [])

    return SecureServer(client_manager=client_manager, strategy=strategy)

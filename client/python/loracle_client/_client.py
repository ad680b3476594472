"""A small typed API over loracle's gRPC services (proto/loracle/v1)."""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from loracle.v1 import adapters_pb2, adapters_pb2_grpc
from loracle.v1 import inference_pb2, inference_pb2_grpc
from loracle.v1 import training_pb2, training_pb2_grpc


class LoracleError(Exception):
    """A failed call: `code` is the gRPC status (grpc.StatusCode), `message` the server's."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class MemberOutput:
    member: int
    sample: int
    probs: List[float]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One input's answer: the ensemble mean and its uncertainty (nats)."""
    prediction_id: str
    label: str
    label_index: int
    probs: List[float]
    confidence: float
    predictive_entropy: float
    expected_entropy: float
    mutual_information: float
    prob_std: List[float]
    abstained: bool
    truncated: bool
    num_tokens: int
    adapter: str
    version: int
    labels: List[str]
    members: List[MemberOutput]
    windows: int = 1  # windows a long text was read in (adapters fine-tuned with max_windows)
    # With coverage=c: the split-conformal set (labels, most probable first) that holds the true
    # label with probability >= c over exchangeable inputs.
    prediction_set: List[str] = dataclasses.field(default_factory=list)
    # Higher = more likely wrong: the uncertainty that ranked the adapter's validation errors
    # best (0 for adapters without one).
    error_score: float = 0.0
    # Higher = less like the adapter's training inputs; > 1 for about 5% of texts like its
    # validation texts (0 for adapters without an OOD detector).
    ood_score: float = 0.0


@dataclasses.dataclass(frozen=True)
class FeedbackResult:
    recorded: int
    duplicates: int
    errors: Dict[str, str]  # prediction_id -> the server's reason


@dataclasses.dataclass(frozen=True)
class Adapter:
    name: str
    version: int
    state: str  # READY, LOADING, FAILED, UNLOADING
    labels: List[str]
    members: int
    mc_samples: int
    rank: int
    error: str
    resident: bool


@dataclasses.dataclass(frozen=True)
class Job:
    id: str
    adapter: str
    state: str  # QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED
    step: int
    total_steps: int
    loss: float
    epoch: int
    published_version: int
    error: str
    raw: training_pb2.Job  # every field, e.g. raw.report for the validation report

    @property
    def done(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED")


def _job(j: training_pb2.Job) -> Job:
    return Job(id=j.id, adapter=j.adapter, state=training_pb2.JobState.Name(j.state)[10:],
               step=j.step, total_steps=j.total_steps, loss=j.loss, epoch=j.epoch,
               published_version=j.published_version, error=j.error, raw=j)


class JobHandle:
    """A submitted fine-tune job: .watch() yields its progress until it ends; .wait() the end."""

    def __init__(self, client: "Client", job: Job):
        self._client = client
        self.id = job.id
        self.job = job

    def refresh(self) -> Job:
        self.job = _job(self._client._call(self._client._training.Get,
                                           training_pb2.GetJobRequest(id=self.id)))
        return self.job

    def watch(self, timeout: Optional[float] = None) -> Iterator[Job]:
        """Each state and progress update the server streams, the last one the job's end."""
        try:
            for j in self._client._training.Watch(training_pb2.GetJobRequest(id=self.id),
                                                 timeout=timeout,
                                                 metadata=self._client._metadata):
                self.job = _job(j)
                yield self.job
        except grpc.RpcError as e:
            raise LoracleError(e.code(), e.details()) from None

    def wait(self, timeout: Optional[float] = None) -> Job:
        for _ in self.watch(timeout):
            pass
        return self.job

    def cancel(self) -> Job:
        self.job = _job(self._client._call(self._client._training.Cancel,
                                           training_pb2.GetJobRequest(id=self.id)))
        return self.job


Example = Union[Tuple[str, str], Tuple[str, str, str]]  # (text, label) or (text, pair, label)


class Client:
    """A connection to one loracle server.

    target: "host:port". token: a role token (sent as "authorization: Bearer TOKEN").
    tls: False for plaintext, True for TLS with the system's roots, or PEM bytes of the CA.
    timeout: the default deadline of each call, in seconds (None: none).
    """

    def __init__(self, target: str, token: Optional[str] = None,
                 tls: Union[bool, bytes] = False, timeout: Optional[float] = 30.0):
        if tls:
            creds = grpc.ssl_channel_credentials(root_certificates=tls if isinstance(tls, bytes)
                                                 else None)
            self._channel = grpc.secure_channel(target, creds)
        else:
            self._channel = grpc.insecure_channel(target)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._adapters = adapters_pb2_grpc.AdaptersStub(self._channel)
        self._training = training_pb2_grpc.TrainingStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: Optional[float] = None):
        try:
            return method(request, timeout=timeout if timeout is not None else self._timeout,
                          metadata=self._metadata)
        except grpc.RpcError as e:
            raise LoracleError(e.code(), e.details()) from None

    def predict(self, adapter: str, texts: Sequence[str], pairs: Optional[Sequence[str]] = None,
                mc_samples: Optional[int] = None, return_members: bool = False,
                seed: Optional[int] = None,
                abstain_threshold: Optional[float] = None,
                coverage: Optional[float] = None,
                abstain_risk: Optional[float] = None) -> List[Prediction]:
        """Classifies `texts` (and sentence `pairs`) with `adapter`; one Prediction per text."""
        req = inference_pb2.PredictRequest(adapter=adapter,
                                           inputs=[t.encode("utf-8") for t in texts],
                                           return_members=return_members)
        if pairs is not None:
            req.text_pairs.extend(p.encode("utf-8") for p in pairs)
        if mc_samples is not None:
            req.mc_samples = mc_samples
        if seed is not None:
            req.seed = seed
        if abstain_threshold is not None:
            req.abstain_threshold = abstain_threshold
        if coverage is not None:
            req.coverage = coverage
        if abstain_risk is not None:
            req.abstain_risk = abstain_risk
        resp = self._call(self._inference.Predict, req)
        labels = list(resp.labels)
        return [Prediction(prediction_id=p.prediction_id, label=p.label,
                           label_index=p.label_index, probs=list(p.probs),
                           confidence=p.uncertainty.confidence,
                           predictive_entropy=p.uncertainty.predictive_entropy,
                           expected_entropy=p.uncertainty.expected_entropy,
                           mutual_information=p.uncertainty.mutual_information,
                           prob_std=list(p.uncertainty.prob_std), abstained=p.abstained,
                           truncated=p.truncated, num_tokens=p.num_tokens, adapter=resp.adapter,
                           version=resp.version, labels=labels,
                           members=[MemberOutput(m.member, m.sample, list(m.probs))
                                    for m in p.members],
                           windows=p.windows or 1,
                           prediction_set=list(p.prediction_set),
                           error_score=p.uncertainty.error_score,
                           ood_score=p.uncertainty.ood_score)
                for p in resp.predictions]

    def feedback(self, labels: Union[Dict[str, str], Sequence[Tuple[str, str]]]) -> FeedbackResult:
        """The true label of earlier predictions: {prediction_id: label} or (id, label) pairs."""
        items = labels.items() if isinstance(labels, dict) else labels
        req = inference_pb2.FeedbackRequest(
            items=[inference_pb2.FeedbackItem(prediction_id=i, true_label=l) for i, l in items])
        resp = self._call(self._inference.Feedback, req)
        return FeedbackResult(recorded=resp.recorded, duplicates=resp.duplicates,
                              errors={r.prediction_id: r.message for r in resp.results if r.code})

    def adapters(self) -> List[Adapter]:
        """Every adapter version the server holds."""
        resp = self._call(self._adapters.List, adapters_pb2.ListAdaptersRequest())
        return [Adapter(name=a.name, version=a.version,
                        state=adapters_pb2.AdapterState.Name(a.state)[len("ADAPTER_STATE_"):],
                        labels=list(a.labels), members=a.members, mc_samples=a.mc_samples,
                        rank=a.rank, error=a.error, resident=a.resident)
                for a in resp.adapters]

    def finetune(self, adapter: str, examples: Sequence[Example] = (),
                 data_path: Optional[str] = None, labels: Optional[Sequence[str]] = None,
                 members: Optional[int] = None, epochs: Optional[int] = None,
                 max_steps: Optional[int] = None, learning_rate: Optional[float] = None,
                 seed: Optional[int] = None, rank: Optional[int] = None,
                 **fields) -> JobHandle:
        """Submits a fine-tune job: inline (text, label) / (text, pair, label) examples or a
        server-side data_path. Other SubmitRequest fields pass through `fields`
        (e.g. validation_split=0.2). Returns at once; .watch() or .wait() on the handle."""
        req = training_pb2.SubmitRequest(adapter=adapter, **fields)
        for e in examples:
            if len(e) == 2:
                req.examples.add(text=e[0], label=e[1])
            else:
                req.examples.add(text=e[0], text_pair=e[1], label=e[2])
        if data_path is not None:
            req.data_path = data_path
        if labels is not None:
            req.labels.extend(labels)
        for name, value in (("ensemble_members", members), ("epochs", epochs),
                            ("max_steps", max_steps), ("learning_rate", learning_rate),
                            ("seed", seed)):
            if value is not None:
                setattr(req, name, value)
        if rank is not None:
            req.lora.rank = rank
        return JobHandle(self, _job(self._call(self._training.Submit, req)))

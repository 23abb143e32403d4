"""Publishing to the Hub, against the local Hub-compatible server of tests/hub_server.py (no network)."""

import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from huggingface_hub.utils import logging as hub_logging
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertTokenizer, pipeline

import hf_compact
from hf_compact import hub
from hf_compact.hub import (
    HubPublishError,
    check_can_publish,
    files_to_publish,
    push_folder_to_hub,
    resolve_token,
    validate_repo_id,
)
from hub_server import FakeHub, fake_hub, hub_endpoint  # noqa: F401  (fixtures)


LABELS = {0: "negative", 1: "positive"}
TEXTS = ["w1 w7 w9 w12", "w20 w30 w40 w41 w42 w43", "w3"]
CARD = """---
library_name: transformers
pipeline_tag: text-classification
tags:
- hf_compact
---

# A tiny compact classifier

Built from a configuration for the test suite.
"""
LEFTOVERS = {
    "checkpoints/step-10/model.safetensors": b"old weights",
    "checkpoint-500/trainer_state.json": b"{}",
    "runs/events.out.tfevents.1": b"events",
    "teacher_cache/abc/data.arrow": b"logits",
    "training_args.bin": b"args",
    "optimizer.pt": b"optimizer",
    "scheduler.pth": b"scheduler",
    "state.pkl": b"pickle",
    ".env": b"SECRET=1",
    "extra/.DS_Store": b"finder",
}


@pytest.fixture(autouse=True)
def hub_reachable(monkeypatch, tmp_path):
    """conftest sets HF_HUB_OFFLINE=1 for the suite; these tests talk to the local server, never to huggingface.co.
    No token leaks in from the environment or from a login on this machine."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-login" / "stored_tokens"))


def _build(family: str, vocab_size: int):
    torch.manual_seed(0)
    if family == "compact_distilbert":
        config = hf_compact.CompactDistilBertConfig(
            vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
            id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
        )
        return hf_compact.CompactDistilBertForSequenceClassification(config).eval()
    config = hf_compact.CompactSqueezeBertConfig(
        vocab_size=vocab_size, hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, q_groups=2, k_groups=4, v_groups=2,
        post_attention_groups=1, intermediate_groups=4, output_groups=2,
        id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )
    return hf_compact.CompactSqueezeBertForSequenceClassification(config).eval()


def _saved_model(folder: Path, family: str, tokenizer_dir, leftovers: bool = True):
    """A saved classifier folder (weights, config, tokenizer, README card) plus training leftovers."""
    tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    model = _build(family, len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(CARD)
    if leftovers:
        for relative, content in LEFTOVERS.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(content)
    return model, tokenizer


def _tree_hashes(folder: Path) -> dict:
    """sha256 and mtime of every file (and the set of folders), to prove a push left the folder untouched."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_file():
            hashes[key] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            hashes[key] = "dir"
    return hashes


def _logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


@pytest.fixture
def model_folder(tmp_path, tokenizer_dir):
    folder = tmp_path / "student"
    folder.mkdir()
    _saved_model(folder, "compact_distilbert", tokenizer_dir)
    return folder


# ---------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("family", ["compact_distilbert", "compact_squeezebert"])
def test_push_then_download_gives_the_same_model(family, hub_endpoint, fake_hub, tmp_path, tokenizer_dir):
    endpoint, token = hub_endpoint
    folder = tmp_path / "student"
    folder.mkdir()
    model, tokenizer = _saved_model(folder, family, tokenizer_dir)
    repo_id = f"alice/tiny-{family.replace('_', '-')}"

    url = push_folder_to_hub(folder, repo_id, token=token, endpoint=endpoint)

    assert url == f"{endpoint}/{repo_id}"
    published = files_to_publish(folder)
    assert "model.safetensors" in published and "README.md" in published and "tokenizer_config.json" in published
    remote = fake_hub.repo_files(repo_id)
    assert sorted(remote) == sorted(published + [".gitattributes"])
    assert all(remote[name] == (folder / name).read_bytes() for name in published)
    assert not set(remote) & set(LEFTOVERS)
    # Uploaded inline as regular files: never an LFS or Xet transfer.
    assert fake_hub.called("POST", "/preupload/") and len(fake_hub.called("POST", "/commit/")) == 1
    assert not [r for r in fake_hub.requests if "xet" in r.path.lower() or "lfs" in r.path.lower()]

    # A public repo downloads without a token.
    snapshot = Path(snapshot_download(repo_id, endpoint=endpoint, cache_dir=tmp_path / "cache", token=False))
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()) == sorted(remote)
    assert fake_hub.called("HEAD", f"/{repo_id}/resolve/") and fake_hub.called("GET", f"/{repo_id}/resolve/")

    reloaded = AutoModelForSequenceClassification.from_pretrained(snapshot).eval()
    assert type(reloaded) is type(model)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(snapshot)
    expected = _logits(model, tokenizer)
    assert torch.equal(_logits(reloaded, reloaded_tokenizer), expected)

    classifier = pipeline("text-classification", model=str(snapshot), top_k=None, device="cpu")
    for predictions, probs in zip(classifier(TEXTS), torch.softmax(expected, dim=-1)):
        scores = {item["label"]: item["score"] for item in predictions}
        assert scores == pytest.approx({"negative": probs[0].item(), "positive": probs[1].item()}, abs=1e-6)


def test_private_repo_needs_the_token_to_read(fake_hub, model_folder):
    push_folder_to_hub(model_folder, "alice/secret", private=True, token=fake_hub.token, endpoint=fake_hub.endpoint)
    api = HfApi(endpoint=fake_hub.endpoint)
    assert api.model_info("alice/secret", token=fake_hub.token).private is True
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/secret", token=False)


def test_pushing_again_updates_only_what_changed(fake_hub, model_folder):
    push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert fake_hub.commit_count("alice/tiny") == 2  # repo creation + first upload; the unchanged rerun is a no-op

    (model_folder / "README.md").write_text(CARD + "\nSecond version.\n")
    push_folder_to_hub(model_folder, "alice/tiny", commit_message="Update the card", token=fake_hub.token,
                       endpoint=fake_hub.endpoint)
    assert fake_hub.commit_count("alice/tiny") == 3
    assert fake_hub.repo_files("alice/tiny")["README.md"].endswith(b"Second version.\n")


def test_endpoint_none_uses_the_default_endpoint(fake_hub, model_folder, monkeypatch):
    # HF_ENDPOINT is read into `constants.ENDPOINT` when huggingface_hub is imported.
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    assert push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token) == f"{fake_hub.endpoint}/alice/tiny"
    assert fake_hub.called("POST", "/api/models/alice/tiny/commit/main")


# ---------------------------------------------------------------------------- failures


@pytest.mark.parametrize("failure", ["server_down", "wrong_token", "server_error"])
def test_failed_push_leaves_the_folder_intact_and_a_rerun_succeeds(failure, fake_hub, model_folder):
    before = _tree_hashes(model_folder)
    token = fake_hub.token
    if failure == "server_down":
        fake_hub.stop()
    elif failure == "wrong_token":
        token = "hf_not_the_right_token_0123456789"
    else:
        fake_hub.fail_next(1, status=500)

    with pytest.raises(HubPublishError) as info:
        push_folder_to_hub(model_folder, "alice/tiny", token=token, endpoint=fake_hub.endpoint)

    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert f"'alice/tiny' at {fake_hub.endpoint} failed" in message
    assert f"Nothing in the local folder {model_folder} was changed" in message and "run the push again" in message
    expected = {
        "server_down": (None, ["could not be reached", "Check your network connection", "HF_ENDPOINT"]),
        "wrong_token": (401, ["HTTP 401", "hf auth login", "HF_TOKEN"]),
        "server_error": (500, ["HTTP 500", "usually temporary"]),
    }[failure]
    assert info.value.status_code == expected[0]
    for fragment in expected[1]:
        assert fragment in message
    assert token not in message
    assert _tree_hashes(model_folder) == before
    assert not fake_hub.called("POST", "/commit/")

    if failure == "server_down":
        fake_hub.start()  # same port, same endpoint
    url = push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert url == f"{fake_hub.endpoint}/alice/tiny"
    assert sorted(fake_hub.repo_files("alice/tiny")) == sorted(files_to_publish(model_folder) + [".gitattributes"])
    assert _tree_hashes(model_folder) == before


@pytest.fixture
def no_backoff_wait(monkeypatch):
    """The client retries 5xx answers with waits of 1, 2, 4, 8, 8 s: skip the waits, keep the retries."""
    import huggingface_hub.utils._http as client_http

    monkeypatch.setattr(client_http, "time", SimpleNamespace(sleep=lambda seconds: None))


def test_server_errors_during_the_commit_change_nothing(fake_hub, model_folder, no_backoff_wait):
    before = _tree_hashes(model_folder)
    fake_hub.fail_next(20, status=503, path_contains="/commit/")

    with pytest.raises(HubPublishError, match=r"HTTP 503") as info:
        push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)

    assert info.value.status_code == 503
    assert len(fake_hub.called("POST", "/commit/")) > 1  # the client retried before giving up
    assert fake_hub.commit_count("alice/tiny") == 1  # only the repo creation: no partial upload
    assert _tree_hashes(model_folder) == before
    fake_hub.clear_failures()
    push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert fake_hub.commit_count("alice/tiny") == 2


def test_a_transient_server_error_is_retried(fake_hub, model_folder, no_backoff_wait):
    fake_hub.fail_next(1, status=502, path_contains="/preupload/")
    push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert [r.status for r in fake_hub.called("POST", "/preupload/")] == [502, 200]
    assert "model.safetensors" in fake_hub.repo_files("alice/tiny")


def test_read_only_token_is_refused_with_403(fake_hub, model_folder):
    with pytest.raises(HubPublishError, match="HTTP 403") as info:
        push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.read_token, endpoint=fake_hub.endpoint)
    assert info.value.status_code == 403
    assert "write access" in str(info.value)


def test_read_only_token_on_an_existing_repo_is_refused_with_403(fake_hub, model_folder, monkeypatch):
    push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    (model_folder / "README.md").write_text(CARD + "\nChanged.\n")
    # create_repo only builds the URL of an existing repo for the default endpoint: serve it as the default.
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    with pytest.raises(HubPublishError, match="HTTP 403"):
        push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.read_token)
    assert fake_hub.commit_count("alice/tiny") == 2


def test_wrong_endpoint_gives_404_advice(fake_hub, model_folder):
    with pytest.raises(HubPublishError, match="HTTP 404") as info:
        push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint + "/nothing")
    assert "is a Hugging Face Hub" in str(info.value)


def test_timeout_is_reported_as_a_publish_error(fake_hub, model_folder, monkeypatch):
    def timing_out(*args, **kwargs):
        raise hub._http.ReadTimeout("The read operation timed out")

    monkeypatch.setattr(HfApi, "create_repo", timing_out)
    with pytest.raises(HubPublishError, match="timed out") as info:
        push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert info.value.status_code is None and "run the push again" in str(info.value)


def test_offline_mode_is_reported(fake_hub, model_folder, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPublishError, match="unset HF_HUB_OFFLINE"):
        push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert fake_hub.requests == []


def test_preflight_refuses_offline_mode(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        check_can_publish("alice/tiny", token="hf_anything")


def test_invalid_card_metadata_is_reported(fake_hub, model_folder):
    (model_folder / "README.md").write_text("---\nlicense: mit\n# never closed\n")
    with pytest.raises(HubPublishError, match="Invalid metadata in README.md"):
        push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)


# ---------------------------------------------------------------------------- local checks


@pytest.mark.parametrize(
    "repo_id", ["tiny", "alice/bob/tiny", "alice/", "/tiny", "", "alice/bad--name", "alice/-tiny", "alice/tiny.git",
                "alice/ti ny", "alice/" + "x" * 97],
)
def test_bad_repo_ids_are_rejected_before_any_request(repo_id, fake_hub, model_folder):
    with pytest.raises(ValueError, match="'owner/name'") as info:
        validate_repo_id(repo_id)
    assert repr(repo_id) in str(info.value)
    with pytest.raises(ValueError, match="'owner/name'"):
        check_can_publish(repo_id, token="hf_anything")
    with pytest.raises(ValueError, match="'owner/name'"):
        push_folder_to_hub(model_folder, repo_id, token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert fake_hub.requests == []


@pytest.mark.parametrize("repo_id", ["alice/tiny", "my-org/compact_distilbert.sst2", "A1/b-2"])
def test_good_repo_ids_pass(repo_id):
    assert validate_repo_id(repo_id) == repo_id


def test_missing_token_is_a_clear_error(fake_hub, model_folder):
    for call in (lambda: resolve_token(), lambda: check_can_publish("alice/tiny"),
                 lambda: push_folder_to_hub(model_folder, "alice/tiny", endpoint=fake_hub.endpoint)):
        with pytest.raises(ValueError, match="No Hugging Face token found") as info:
            call()
        assert "hf auth login" in str(info.value) and "HF_TOKEN" in str(info.value)
    with pytest.raises(ValueError, match="empty"):
        resolve_token("  ")
    assert fake_hub.requests == []


def test_token_sources_in_order(monkeypatch):
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True)
    Path(constants.HF_TOKEN_PATH).write_text("hf_from_login\n")
    assert resolve_token() == "hf_from_login"
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert resolve_token() == "hf_from_env"
    assert resolve_token("hf_explicit") == "hf_explicit"
    check_can_publish("alice/tiny")  # no network, no exception


def test_token_never_appears_in_errors_logs_or_pushed_files(fake_hub, model_folder, caplog, monkeypatch, tmp_path):
    hub_logging.enable_propagation()
    old_level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_debug()
    try:
        caplog.set_level(logging.DEBUG)
        wrong = "hf_WrongTokenValue_6f1d2c"
        with pytest.raises(HubPublishError) as info:
            push_folder_to_hub(model_folder, "alice/tiny", token=wrong, endpoint=fake_hub.endpoint)
        assert wrong not in str(info.value) and wrong not in repr(info.value)

        monkeypatch.setenv("HF_TOKEN", fake_hub.token)  # the usual way in CI: the token comes from the environment
        push_folder_to_hub(model_folder, "alice/tiny", endpoint=fake_hub.endpoint)
        fake_hub.stop()
        with pytest.raises(HubPublishError) as info:
            push_folder_to_hub(model_folder, "alice/tiny", endpoint=fake_hub.endpoint)
        assert fake_hub.token not in str(info.value)
        fake_hub.start()
        snapshot = Path(snapshot_download("alice/tiny", endpoint=fake_hub.endpoint, cache_dir=tmp_path / "cache"))
    finally:
        hub_logging.set_verbosity(old_level)
        hub_logging.disable_propagation()

    assert any(r.name.startswith("huggingface_hub") and r.levelno == logging.DEBUG for r in caplog.records)
    assert any(r.name == "hf_compact.hub" for r in caplog.records)
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    for secret in (wrong, fake_hub.token):
        assert secret not in logged
        for path in fake_hub.stored_files() + [p for p in snapshot.rglob("*") if p.is_file()]:
            assert secret.encode() not in path.read_bytes(), path
    assert all(r.authenticated for r in fake_hub.called("POST", "/commit/"))


def test_files_to_publish_skips_training_leftovers(model_folder):
    published = files_to_publish(model_folder)
    assert not set(published) & set(LEFTOVERS)
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= set(published)
    assert published == sorted(published)


def test_folder_checks(tmp_path, fake_hub):
    with pytest.raises(ValueError, match="not a folder"):
        push_folder_to_hub(tmp_path / "missing", "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    (tmp_path / "only-leftovers" / "checkpoints").mkdir(parents=True)
    (tmp_path / "only-leftovers" / "checkpoints" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "only-leftovers" / "optimizer.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="no files to upload"):
        push_folder_to_hub(tmp_path / "only-leftovers", "alice/tiny", token=fake_hub.token,
                           endpoint=fake_hub.endpoint)
    assert fake_hub.requests == []


def test_an_adapter_naming_a_local_base_model_is_not_published(fake_hub, model_folder):
    """A PEFT adapter whose base model is a local path would publish that path and load nowhere else."""
    (model_folder / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": "%s"}'
                                                      % (model_folder.parent / "base"))
    with pytest.raises(ValueError, match="local folder.*--hub_base_model"):
        push_folder_to_hub(model_folder, "alice/lora", token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert fake_hub.requests == []
    (model_folder / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": "alice/b"}')
    push_folder_to_hub(model_folder, "alice/lora", token=fake_hub.token, endpoint=fake_hub.endpoint)
    assert b"alice/b" in fake_hub.repo_files("alice/lora")["adapter_config.json"]


def test_fake_hub_rejects_anonymous_writes(fake_hub):
    api = HfApi(endpoint=fake_hub.endpoint)
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError) as info:
        api.create_repo("alice/tiny", token=False)
    assert info.value.response.status_code == 401
    assert fake_hub.requests[-1].authenticated is False


def test_local_paths_in_results_are_not_published(fake_hub, model_folder, tmp_path):
    results = {"teacher": {"name_or_path": str(tmp_path / "secret-host" / "teacher")},
               "dataset": {"source": "./data/reviews.csv", "hub": "owner/dataset"},
               "training": {"history": [{"note": "plain text / with a slash"}]}}
    (model_folder / "results.json").write_text(json.dumps(results))
    before = (model_folder / "results.json").read_bytes()
    push_folder_to_hub(model_folder, "alice/tiny", token=fake_hub.token, endpoint=fake_hub.endpoint)
    published = fake_hub.repo_files("alice/tiny")["results.json"].decode()
    assert str(tmp_path) not in published and "secret-host" not in published and "./data" not in published
    pushed = json.loads(published)
    assert pushed["teacher"]["name_or_path"] == "teacher" and pushed["dataset"]["source"] == "reviews.csv"
    assert pushed["dataset"]["hub"] == "owner/dataset" and pushed["training"] == results["training"]
    assert (model_folder / "results.json").read_bytes() == before  # the local file keeps its paths

"""GET /api/v1/datasets/{id}/health on hand-inserted runs and jobs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from app.models import Job
from tests.advisor.builders import make_run
from tests.builders import add_samples, make_dataset
from tests.web.session import login


def headline(accuracy: float, macro_f1: float) -> dict:
    pc = {"a": {"precision": 1.0, "recall": 1.0, "f1": macro_f1, "support": 1},
          "b": {"precision": 1.0, "recall": 1.0, "f1": macro_f1, "support": 1}}
    return {"accuracy": accuracy, "macro_f1": macro_f1, "weighted_f1": macro_f1, "per_class": pc,
            "confusion": {"labels": ["a", "b"], "matrix": [[1, 0], [0, 1]]}}


VALID_F1 = [0.70, 0.74, 0.72, 0.80, 0.78]
TEST_F1 = [0.71, 0.69, 0.75, 0.72, 0.70]
VALID_ACC = [0.80, 0.82, 0.81, 0.86, 0.85]
TEST_ACC = [0.79, 0.83, 0.80, 0.87, 0.86]


@pytest.fixture
def runs(db):
    ds = make_dataset(db, classes=["a", "b"])
    add_samples(db, ds, [{"label": "a", "split": "valid"}] * 40 + [{"label": "b", "split": "valid"}] * 12
                + [{"label": "a"}, {"label": "b"}])
    ids = []
    for i in range(5):
        ids.append(make_run(db, ds, headline(VALID_ACC[i], VALID_F1[i]), headline(TEST_ACC[i], TEST_F1[i])).id)
    make_run(db, ds, headline(0.1, 0.1), headline(0.9, 0.9), status="failed")  # not counted
    make_run(db, ds, headline(0.5, 0.5), None)  # no test metrics: not a pair
    return ds, ids


def test_correlations_match_numpy_and_scipy(client, runs, engineer):
    ds, ids = runs
    body = client.get(f"/api/v1/datasets/{ds.id}/health", headers=engineer.headers).json()
    assert [r["run_id"] for r in body["runs"]] == ids
    f1, acc = body["correlation"]["macro_f1"], body["correlation"]["accuracy"]
    assert f1["n"] == acc["n"] == 5
    assert f1["pearson"] == pytest.approx(np.corrcoef(VALID_F1, TEST_F1)[0, 1])
    assert f1["spearman"] == pytest.approx(sps.spearmanr(VALID_F1, TEST_F1).statistic)
    assert acc["pearson"] == pytest.approx(np.corrcoef(VALID_ACC, TEST_ACC)[0, 1])
    assert acc["spearman"] == pytest.approx(sps.spearmanr(VALID_ACC, TEST_ACC).statistic)
    # Macro F1 does not move together (r ~ 0.08); accuracy does (r ~ 0.97).
    warnings = body["warnings"]
    assert any(w.startswith("valid and test macro F1 do not move together over 5 runs") for w in warnings)
    assert not any("accuracy do not move" in w for w in warnings)
    # 12 valid samples of b: the valid split is small for it, a's 40 are enough.
    assert body["valid_counts"] == {"a": 40, "b": 12}
    assert any(w.startswith("1 of 2 classes have fewer than 30 valid samples: b (12)") for w in warnings)
    assert body["seeds"] is None


def test_the_latest_seeds_job_is_summarised(client, db, runs, engineer):
    ds, _ = runs
    spread = {"n": 3, "mean": 0.7, "std": 0.02, "sem": 0.0115, "min": 0.68, "max": 0.72}
    for i, status in enumerate(("succeeded", "succeeded", "failed")):
        db.add(Job(dataset_id=ds.id, kind="seeds", params={}, status=status, result={
            "seeds": 3 + i, "summary": {"valid": {"macro_f1": spread, "accuracy": spread}, "test": None},
            "comparison": {"warn": True, "message": "the valid split is too small to tell these runs apart: x"},
            "warning": "the valid split is too small to tell these runs apart: x"}))
        db.commit()
    body = client.get(f"/api/v1/datasets/{ds.id}/health", headers=engineer.headers).json()
    seeds = body["seeds"]
    assert seeds["seeds"] == 4, "the latest succeeded one"
    assert seeds["valid_macro_f1"] == spread and seeds["test_macro_f1"] is None
    assert any("the valid split is too small to tell these runs apart" in w for w in body["warnings"])


def test_few_runs_give_no_correlation_warning(client, db, engineer):
    ds = make_dataset(db, classes=["a", "b"])
    add_samples(db, ds, [{"label": "a", "split": "valid"}] * 30 + [{"label": "b", "split": "valid"}] * 30)
    for v, t in ((0.7, 0.9), (0.8, 0.6), (0.9, 0.7)):
        make_run(db, ds, headline(v, v), headline(t, t))
    body = client.get(f"/api/v1/datasets/{ds.id}/health", headers=engineer.headers).json()
    assert body["correlation"]["macro_f1"]["n"] == 3 and body["correlation"]["macro_f1"]["pearson"] < 0
    assert body["warnings"] == []


def test_health_is_for_engineers(client, runs, annotator, admin):
    ds, _ = runs
    r = client.get(f"/api/v1/datasets/{ds.id}/health", headers=annotator.headers)
    assert r.status_code == 403
    assert client.get(f"/api/v1/datasets/{ds.id}/health", headers=admin.headers).status_code == 200
    assert client.get("/api/v1/datasets/999/health", headers=admin.headers).status_code == 404


def test_engineers_see_the_section_on_the_page(client, runs, engineer):
    ds, _ = runs
    login(client, engineer.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    section = html[html.index('id="validation-health"'):]
    section = section[: section.index("</section>")]
    assert "Valid and test macro F1 do not move together over 5 runs" in section
    assert 'id="health-correlation"' in section
    assert f'action="/datasets/{ds.id}/health/seeds"' in section

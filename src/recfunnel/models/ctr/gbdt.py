"""A gradient-boosted trees baseline (LightGBM) on the same fields as the neural rankers.

Categorical fields (and bucketised numerics) are LightGBM categorical features (their codes);
numeric fields are their standardised values; multi-hot and history fields become count columns,
one per vocabulary value (a sparse matrix), so trees see "has genre Drama" or "watched item 50
among the last ten". Deterministic for a seed (``deterministic=True``, row-wise histograms).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recfunnel.data.fields import PAD, FieldBatch, FieldSchema
from recfunnel.models.base import ModelConfig


class LightGBMConfig(ModelConfig):
    learning_rate: float = Field(0.05, gt=0, description="shrinkage")
    num_leaves: int = Field(31, ge=2, description="leaves per tree (LightGBM default)")
    min_data_in_leaf: int = Field(100, ge=1, description="rows per leaf at least")
    feature_fraction: float = Field(0.8, gt=0, le=1, description="columns sampled per tree")
    bagging_fraction: float = Field(0.8, gt=0, le=1, description="rows sampled per iteration")
    lambda_l2: float = Field(1.0, ge=0, description="L2 regularisation of leaf values")
    cat_smooth: float = Field(10.0, ge=0, description="smoothing of categorical splits")
    max_rounds: int = Field(2000, ge=1, description="boosting rounds at most")
    early_stopping: int = Field(50, ge=1, description="rounds without validation AUC gain before stopping")
    num_threads: int = Field(0, ge=0, description="0: LightGBM's default (all cores)")


class LightGBMRanker:
    """LightGBM binary classifier on encoded fields; ``score_fields`` returns raw scores (logits)."""

    family = "lightgbm"
    Config = LightGBMConfig
    trainable = True
    objective = "boosting"  # LightGBM's own: binary log loss, early stopping on the valid part's AUC
    inputs = "fields"

    def __init__(self, config: LightGBMConfig, schema: FieldSchema, seed: int = 0) -> None:
        self.config, self.schema, self.seed = config, schema, seed
        self.booster_ = None
        self.best_iteration_ = 0

    def features(self, batch: FieldBatch) -> tuple[sp.csr_matrix, list[int], list[str]]:
        """The CSR feature matrix of a batch, the indices of its categorical columns and all names."""
        cols, cat, names = [], [], []
        n = len(batch)
        for f in self.schema:
            x = batch[f.name].numpy()
            if f.kind in ("multi_hot", "sequence"):
                row = np.repeat(np.arange(n), x.shape[1])
                keep = x.reshape(-1) != PAD
                m = sp.csr_matrix(
                    (np.ones(keep.sum(), np.float32), (row[keep], x.reshape(-1)[keep])),
                    shape=(n, f.cardinality),
                )
                m.sum_duplicates()
                cols.append(m[:, 1:])  # the PAD column never holds anything
                names += [f"{f.name}_{code}" for code in range(1, f.cardinality)]
            else:
                if f.kind == "categorical":
                    cat.append(len(names))
                cols.append(sp.csr_matrix(x.astype(np.float32).reshape(-1, 1)))
                names.append(f.name)
        return sp.hstack(cols, format="csr"), cat, names

    def fit(self, train: FieldBatch, y_train: np.ndarray, valid: FieldBatch, y_valid: np.ndarray):
        import lightgbm as lgb

        c = self.config
        x, cat, names = self.features(train)
        xv, _, _ = self.features(valid)
        params = {
            "objective": "binary",
            "metric": "auc",
            "learning_rate": c.learning_rate,
            "num_leaves": c.num_leaves,
            "min_data_in_leaf": c.min_data_in_leaf,
            "feature_fraction": c.feature_fraction,
            "bagging_fraction": c.bagging_fraction,
            "bagging_freq": 1 if c.bagging_fraction < 1 else 0,
            "lambda_l2": c.lambda_l2,
            "cat_smooth": c.cat_smooth,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": c.num_threads,
            "verbosity": -1,
        }
        dtrain = lgb.Dataset(x, y_train, feature_name=names, categorical_feature=cat, free_raw_data=False)
        dvalid = lgb.Dataset(xv, y_valid, reference=dtrain)
        self.history_: dict = {}
        self.booster_ = lgb.train(
            params,
            dtrain,
            num_boost_round=c.max_rounds,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(c.early_stopping, verbose=False),
                lgb.record_evaluation(self.history_),
            ],
        )
        self.best_iteration_ = self.booster_.best_iteration
        return self

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        if self.booster_ is None:
            raise RuntimeError("LightGBMRanker is not fitted: call fit() first")
        x, _, _ = self.features(batch)
        raw = self.booster_.predict(x, num_iteration=self.best_iteration_, raw_score=True)
        return torch.from_numpy(np.asarray(raw, dtype=np.float32))

    def n_params(self) -> int:
        """Learned values: one per tree node (split thresholds and leaf values)."""
        if self.booster_ is None:
            return 0
        dump = self.booster_.dump_model(num_iteration=self.best_iteration_)
        leaves = sum(t["num_leaves"] for t in dump["tree_info"])
        return int(2 * leaves - len(dump["tree_info"]))

    @classmethod
    def from_text(cls, text: str, config: LightGBMConfig, schema: FieldSchema) -> LightGBMRanker:
        """A ranker from LightGBM's text model format (as :meth:`to_text` writes it)."""
        import lightgbm as lgb

        model = cls(config, schema)
        model.booster_ = lgb.Booster(model_str=text)
        model.best_iteration_ = model.booster_.current_iteration()
        return model

    def to_text(self) -> str:
        """The booster as LightGBM's text model format (no pickle)."""
        if self.booster_ is None:
            raise RuntimeError("LightGBMRanker is not fitted")
        return self.booster_.model_to_string(num_iteration=self.best_iteration_)

"""DE-CAM (Karatsiolis & Kamilaris): Differential Evolution over a coarse mask, black-box.

Search space: a ``grid x grid`` mask with values in [0, 1], upsampled bicubically (clipped to
[0, 1]) to the model's input size. Fitness (maximised):

    fitness(m) = p_c(image * up(m)) - sparsity * mean(m)

with p_c the softmax probability of the target class on the masked image (black outside).

Strategy: classic **DE/rand/1/bin** (Storn & Price): for each member x_i pick three other
distinct members r1, r2, r3, mutant v = clip(x_r1 + F * (x_r2 - x_r3), 0, 1); binomial crossover
takes each gene from v with probability CR (and at least one gene, j_rand); the trial replaces
x_i when its fitness is at least as good (greedy selection). The whole population's trials are
one batched classifier call per generation. Deterministic for a given seed.

The map is the best member's upsampled mask, min-max normalised to [0, 1].
Queries: 1 (clean image) + population * (generations + 1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.explain.common import (BudgetExhausted, Classifier, Progress, Scorer, apply_masks,
                                          check_image, make_explanation, minmax, target_of, upsample)


@dataclass
class DECAMSettings:
    grid: int = 7
    population: int = 40
    generations: int = 40
    F: float = 0.5
    CR: float = 0.7
    sparsity: float = 0.3
    seed: int = 0
    budget: int | None = None  # max forward passes; caps generations

    def check(self) -> None:
        if self.grid < 1:
            raise UserError("--grid must be at least 1")
        if self.population < 4:
            raise UserError("DE needs a population of at least 4")
        if self.generations < 0:
            raise UserError("--generations must be >= 0")
        if not 0 < self.F <= 2:
            raise UserError("DE's F must be in (0, 2]")
        if not 0 <= self.CR <= 1:
            raise UserError("DE's CR must be in [0, 1]")
        if self.budget is not None and self.budget < 1 + self.population:
            raise UserError(f"a query budget of {self.budget} is below DE-CAM's minimum of {1 + self.population} "
                            "(clean image + one population)")

    def planned_queries(self) -> int:
        gens = self.generations
        if self.budget is not None:
            gens = min(gens, (self.budget - 1 - self.population) // self.population)
        return 1 + self.population * (gens + 1)


def _mutation_indices(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 3] indices r1, r2, r3: distinct and different from the row index."""
    out = np.empty((n, 3), dtype=np.int64)
    for i in range(n):
        choices = rng.choice(n - 1, size=3, replace=False)
        out[i] = choices + (choices >= i)  # skip i
    return out


def de_rand_1_bin(pop: np.ndarray, F: float, CR: float, rng: np.random.Generator) -> np.ndarray:
    """One generation of DE/rand/1/bin trial vectors for ``pop`` [N, D] in [0, 1]."""
    n, d = pop.shape
    r = _mutation_indices(rng, n)
    mutant = np.clip(pop[r[:, 0]] + F * (pop[r[:, 1]] - pop[r[:, 2]]), 0.0, 1.0)
    cross = rng.random((n, d)) < CR
    cross[np.arange(n), rng.integers(0, d, size=n)] = True
    return np.where(cross, mutant, pop)


def explain(classifier: Classifier, image: np.ndarray, class_index: int | None = None,
            settings: DECAMSettings | None = None, progress: bool | None = None, batch_size: int | None = None):
    s = settings or DECAMSettings()
    s.check()
    image = check_image(image, classifier)
    size = classifier.input_size
    bar = Progress(s.planned_queries(), "decam", enabled=progress)
    scorer = Scorer(classifier, s.budget, batch_size or None, bar)
    if batch_size is None:
        scorer.batch_size = max(scorer.batch_size, min(s.population, 256))
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    cls, p_clean, probs = target_of(classifier, image, class_index, scorer)
    d = s.grid * s.grid

    def fitness(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks = upsample(members.reshape(-1, s.grid, s.grid), size)
        score = scorer.probs(apply_masks(image, masks), cls)
        return score - s.sparsity * members.mean(axis=1), score

    pop = rng.random((s.population, d))
    interrupted = False
    history = []
    fit = score = None
    try:
        fit, score = fitness(pop)
        history.append(float(fit.max()))
        for _ in range(s.generations):
            if scorer.remaining < s.population:
                break
            trial = de_rand_1_bin(pop, s.F, s.CR, rng)
            tfit, tscore = fitness(trial)
            better = tfit >= fit
            pop[better], fit[better], score[better] = trial[better], tfit[better], tscore[better]
            history.append(float(fit.max()))
    except KeyboardInterrupt:
        interrupted = True
    except BudgetExhausted:
        pass
    finally:
        bar.close()
    if fit is None:  # interrupted before the first population was scored
        best = np.ones(d)
        best_fit = best_score = float("nan")
    else:
        i = int(np.argmax(fit))
        best, best_fit, best_score = pop[i], float(fit[i]), float(score[i])
    mask = upsample(best.reshape(s.grid, s.grid), size)
    info = {"settings": {k: getattr(s, k) for k in ("grid", "population", "generations", "F", "CR", "sparsity", "seed", "budget")},
            "strategy": "DE/rand/1/bin", "generations_run": max(0, len(history) - 1),
            "best_fitness": best_fit, "best_masked_score": best_score, "best_mask_mean": float(best.mean()),
            "fitness_history": history, "clean_score": p_clean}
    return make_explanation(classifier, "decam", minmax(mask), cls, probs, scorer, time.perf_counter() - t0,
                            interrupted, info)

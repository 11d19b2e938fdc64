"""DE-CAM (Karatsiolis & Kamilaris): Differential Evolution over a coarse mask, black-box.

Search space: a ``grid x grid`` mask with values in [0, 1] (default 5 x 5), upsampled bicubically
(clipped to [0, 1]) to the model's input size. Fitness (maximised), with the preservation and the
deletion game (Fong & Vedaldi 2017):

    fitness(m) = p_c(keep(m)) - deletion * p_c(keep(1 - m)) - sparsity * mean(up(m))
    keep(m)    = up(m) * image + (1 - up(m)) * fill

with p_c the softmax probability of the target class, ``fill`` a strong Gaussian blur of the
image (sigma 10 px at 224; ``fill="black"``: zeros, the original formulation) and mean(up(m)) the
mask's area at full resolution (the paper's area/sparsity term). The deletion term (default
weight 1; 0 gives the preservation-only fitness at one image per member) asks the mask to hold all
the evidence, not just a sufficient part, so cells that do not matter are pressed to 0 by the
area term instead of keeping their random values; the blur removes an object's detail without
pasting it onto an out-of-distribution black canvas. ``area > 0`` replaces the area term by the
extremal-perturbation constraint ``area_weight * mean((sort(m) - r_area)^2)`` and
``relative=True`` divides the class terms by the clean image's probability; both are off (each
lowered pointing on the tuning split, benchmarks/results/blackbox_pointing.md).

Coarse to fine: after ``refine_from`` (half) of the generations the population is resampled
bilinearly onto a ``refine x refine`` grid (default 10 x 10) and scored again (that generation's
queries), and the search goes on there: the coarse grid finds the object in few dimensions, the
fine one places the mask's peak to a tenth of the image.

Initialisation: member i is ``u_i * d_i`` with ``u_i ~ U(0, 1)^D`` and a density ``d_i`` spread
evenly over [0.15, 1], so the first population spans sparse to dense masks; member 0 is the
all-ones mask (the clean image), which keeps a high-scoring member from the start.

Strategy: classic **DE/rand/1/bin** (Storn & Price): for each member x_i pick three other
distinct members r1, r2, r3, mutant v = clip(x_r1 + F * (x_r2 - x_r3), 0, 1); binomial crossover
takes each gene from v with probability CR (and at least one gene, j_rand); the trial replaces
x_i when its fitness is at least as good (greedy selection). The whole population's trials are
one batched classifier call per generation. Deterministic for a given seed.

The map is the **elite average**: the mean upsampled mask of the best ``elite`` fraction of the
final population (``elite`` = 0: the single best member), blurred with a Gaussian of ``smooth``
(0.5) coarse cells, min-max normalised to [0, 1]. Averaging
the converged elite removes the genes that selection never pressed on (cells that do not change
the score), which otherwise stay at their random values and make the map noisy.

Seeding: the RNG is seeded with ``seed`` only (not with the image), so a re-run on ``image * map``
(ADCC's Coherency) draws the same initial population and mutations; differences in the map then
come from the fitness landscape, not from the random numbers.

With a ``budget``, ``generations`` is capped so that the queries fit it; ``generations=None`` means
"as many as the budget allows" (23 without a budget: 1153 queries with the defaults).
Queries: 1 (clean image) + k * population * (generations + 1), k = 2 with the deletion term, else 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.quality.metrics import blurred
from edge_saliency.explain.common import (BudgetExhausted, Classifier, apply_masks, start, make_explanation,
                                          minmax, target_of, upsample)


@dataclass
class DECAMSettings:
    grid: int = 5
    population: int = 24
    generations: int | None = None  # None: fill the budget (23 without one: 1153 queries)
    F: float = 0.5
    CR: float = 0.7
    sparsity: float = 1.0
    elite: float = 0.25  # fraction of the final population averaged into the map (0: best member only)
    seed: int = 0
    budget: int | None = None  # max forward passes; caps generations
    fill: str = "blur"  # what replaces the masked-out pixels: "blur" (a strong blur of the image) or "black"
    deletion: float = 1.0  # weight of p_c on the deleted image (the mask's pixels filled); 0: preservation only
    refine: int = 10  # fine grid the search moves to after `refine_from` of the generations (<= grid: none)
    refine_from: float = 0.5
    smooth: float = 0.5  # Gaussian blur of the final map, sigma in coarse-grid cells (0: none)
    relative: bool = False  # class scores relative to the clean image's (p / p_clean): weak classes weigh the same
    area: float = 0.0  # extremal-perturbation area constraint: target kept fraction of the cells (0: off)
    area_weight: float = 2.0  # weight of the constraint's penalty mean((sort(m) - r_area)^2)

    def check(self) -> None:
        if self.grid < 1:
            raise UserError("--grid must be at least 1")
        if self.population < 4:
            raise UserError("DE needs a population of at least 4")
        if self.generations is not None and self.generations < 0:
            raise UserError("--generations must be >= 0")
        if not 0 <= self.elite <= 1:
            raise UserError("DE-CAM's elite fraction must be in [0, 1]")
        if not 0 < self.F <= 2:
            raise UserError("DE's F must be in (0, 2]")
        if not 0 <= self.CR <= 1:
            raise UserError("DE's CR must be in [0, 1]")
        if self.fill not in FILLS:
            raise UserError(f"DE-CAM's fill must be one of {', '.join(FILLS)}, not {self.fill!r}")
        if not 0 <= self.area < 1 or self.area_weight < 0:
            raise UserError("DE-CAM's area must be in [0, 1) and its weight >= 0")
        if self.deletion < 0 or self.smooth < 0:
            raise UserError("DE-CAM's deletion weight and smoothing must be >= 0")
        if self.refine < 0 or not 0 < self.refine_from < 1:
            raise UserError("DE-CAM's refine grid must be >= 0 (no refinement at or below --grid) and refine_from in (0, 1)")
        if self.budget is not None and self.budget < 1 + self.per_generation:
            raise UserError(f"a query budget of {self.budget} is below DE-CAM's minimum of {1 + self.per_generation} "
                            "(clean image + one population)")

    @property
    def per_generation(self) -> int:
        """Queries per scored population: each member's preserved image (and its deleted one)."""
        return self.population * (2 if self.deletion > 0 else 1)

    def planned_generations(self) -> int:
        gens = 23 if self.generations is None and self.budget is None else self.generations
        if self.budget is not None:
            fit = (self.budget - 1 - self.per_generation) // self.per_generation
            gens = fit if gens is None else min(gens, fit)
        return int(gens)

    def planned_queries(self) -> int:
        return 1 + self.per_generation * (self.planned_generations() + 1)


FILLS = ("black", "blur")


def fill_image(image: np.ndarray, fill: str) -> np.ndarray | None:
    """The content of masked-out pixels: None (black) or a strong blur of the image (sigma 10 px at 224)."""
    return None if fill == "black" else blurred(image, max(1.0, 10.0 * min(image.shape[:2]) / 224))


def refine_population(pop: np.ndarray, grid: int, fine: int) -> np.ndarray:
    """[N, grid*grid] -> [N, fine*fine]: each member's mask resampled bilinearly onto the finer grid."""
    import cv2

    return np.stack([cv2.resize(m.reshape(grid, grid).astype(np.float32), (fine, fine), interpolation=cv2.INTER_LINEAR)
                     .ravel() for m in pop]).astype(np.float64).clip(0, 1)


def area_penalty(members: np.ndarray, area: float) -> np.ndarray:
    """[N, D] -> [N]: mean squared distance of each member's sorted cells to the step vector with
    round(area * D) ones (Fong, Patrick, Vedaldi 2019's area constraint: exactly that share kept)."""
    d = members.shape[1]
    ref = np.zeros(d)
    ref[d - int(round(area * d)):] = 1.0
    return ((np.sort(members, axis=1) - ref) ** 2).mean(axis=1)


def smooth_map(mask: np.ndarray, sigma_cells: float, grid: int) -> np.ndarray:
    """Gaussian blur of an [H, W] map with sigma given in cells of a ``grid x grid`` mask."""
    import cv2

    if sigma_cells <= 0:
        return mask
    sigma = sigma_cells * mask.shape[0] / grid
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)


def initial_population(rng: np.random.Generator, n: int, d: int, low: float = 0.15) -> np.ndarray:
    """[n, d] in [0, 1]: row 0 all ones, the others uniform noise scaled by densities in [low, 1]."""
    dens = np.linspace(1.0, low, n)[:, None]
    pop = rng.random((n, d)) * dens
    pop[0] = 1.0
    return pop


def elite_average(masks: np.ndarray, fit: np.ndarray, elite: float) -> np.ndarray:
    """Mean of the best ``elite`` fraction of ``masks`` [N, ...] by fitness (at least one member)."""
    k = max(1, int(round(elite * len(fit))))
    order = np.argsort(-fit, kind="stable")[:k]
    return masks[order].mean(axis=0)


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
    image, scorer = start("decam", classifier, image, s, s.planned_queries(), progress, batch_size, s.population)
    size = classifier.input_size
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    cls, p_clean, probs = target_of(classifier, image, class_index, scorer)
    g = s.grid
    d = g * g
    fill = fill_image(image, s.fill)
    gens = s.planned_generations()
    switch = int(round(s.refine_from * gens)) if s.refine > s.grid else -1

    unit = max(p_clean, 1e-6) if s.relative else 1.0

    def fitness(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks = upsample(members.reshape(-1, g, g), size)
        if s.area > 0:
            prior = s.area_weight * area_penalty(members, s.area)
        else:
            prior = s.sparsity * masks.mean(axis=(1, 2))
        if s.deletion > 0:
            both = scorer.probs(np.concatenate([apply_masks(image, masks, fill), apply_masks(image, 1.0 - masks, fill)]), cls)
            score, deleted = both[:len(masks)], both[len(masks):]
            return (score - s.deletion * deleted) / unit - prior, score
        score = scorer.probs(apply_masks(image, masks, fill), cls)
        return score / unit - prior, score

    pop = initial_population(rng, s.population, d)
    interrupted = False
    history = []
    fit = score = None
    try:
        fit, score = fitness(pop)
        history.append(float(fit.max()))
        for gen in range(gens):
            if scorer.remaining < s.per_generation:
                break
            if gen == switch:  # coarse to fine: the same population on the finer grid, scored again
                pop, g = refine_population(pop, g, s.refine), s.refine
                d = g * g
                fit, score = fitness(pop)
                history.append(float(fit.max()))
                continue
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
        scorer.progress.close()
    if fit is None:  # interrupted before the first population was scored
        best = np.ones(d)
        best_fit = best_score = float("nan")
    else:
        i = int(np.argmax(fit))
        best, best_fit, best_score = pop[i], float(fit[i]), float(score[i])
    if fit is None or s.elite == 0:
        mask = upsample(best.reshape(g, g), size)
    else:
        mask = elite_average(upsample(pop.reshape(-1, g, g), size), fit, s.elite)
    mask = smooth_map(mask, s.smooth, s.grid)
    info = {"settings": {k: getattr(s, k) for k in ("grid", "population", "generations", "F", "CR", "sparsity", "elite",
                                                    "seed", "budget", "fill", "deletion", "refine", "refine_from",
                                                    "smooth", "relative", "area", "area_weight")},
            "strategy": "DE/rand/1/bin", "map": "elite average" if s.elite > 0 else "best member",
            "generations_run": max(0, len(history) - 1),
            "refined_at": switch + 1 if 0 <= switch < len(history) - 1 else None,  # index in fitness_history
            "best_fitness": best_fit, "best_masked_score": best_score, "best_mask_mean": float(best.mean()),
            "fitness_history": history, "clean_score": p_clean}
    return make_explanation(classifier, "decam", minmax(mask), cls, probs, scorer, time.perf_counter() - t0,
                            interrupted, info)

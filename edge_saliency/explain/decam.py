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
all-ones mask (the clean image), which keeps a high-scoring member from the start. ``boxes``
(25 %) of the members, the sparsest noise ones, are replaced by random boxes of cells (1 inside,
0 outside, sides of 1 to grid - 1 cells): an object is compact, and for a weak class (p_c ~ 0.1)
noise masks slide to the empty mask, whose fitness the area term makes hard to beat unless a
member already keeps the object whole (benchmarks/results/blackbox_pointing.md).

Strategy: **DE/current-to-pbest/1/bin** (JADE's mutation, Zhang & Sanderson 2009, without its
parameter adaptation and archive): for each member x_i draw x_pbest from the best ``pbest`` (20 %)
of the population and two other distinct members r1, r2; mutant
v = clip(x_i + F (x_pbest - x_i) + F (x_r1 - x_r2), 0, 1). ``strategy="rand/1"`` is classic
DE/rand/1/bin (Storn & Price: v = clip(x_r1 + F (x_r2 - x_r3), 0, 1)), the default until
2026-12-02: with ~20 generations it hardly converges. Binomial crossover takes each gene from v
with probability CR (and at least one gene, j_rand); the trial replaces x_i when its fitness is at
least as good (greedy selection). The whole population's trials are one batched classifier call
per generation. Deterministic for a given seed.

Knock-out (``prune``, on; skipped when the budget cannot hold it and one generation): after the search, each cell of the best member is set to 0 in turn and
all the variants are scored in one call (grid^2 members: 100 on the 10 x 10 grid, 200 queries with
the deletion term); a cell whose knock-out does not lower the fitness does not matter to the class,
and is zeroed in the map. Selection alone leaves such cells at whatever value they were drawn with
(their share of the area term is a hundredth, below the class terms' differences between members),
and one of them at the border was often the map's maximum (benchmarks/results/blackbox_pointing.md).

The map is the **elite average**: the mean upsampled mask of the best ``elite`` fraction of the
final population (``elite`` = 0: the single best member) times the knock-out's weights (bilinearly
upsampled): with ``importance`` (on) each cell's fitness drop when knocked out, divided by the
largest drop (0 for pruned cells), so the map peaks where the class depends on the mask most, not
on a margin cell the mask merely holds; without it 1 for cells that matter, 0 for pruned ones.
Then blurred with a Gaussian of ``smooth`` (0.5) coarse cells, min-max normalised to [0, 1].

Seeding: the RNG is seeded with ``seed`` only (not with the image), so a re-run on ``image * map``
(ADCC's Coherency) draws the same initial population and mutations; differences in the map then
come from the fitness landscape, not from the random numbers.

With a ``budget``, ``generations`` is capped so that the queries fit it; ``generations=None`` means
"as many as the budget allows" (without a budget: DEFAULT_QUERIES, 1200; 19 generations and 1161
queries with the defaults).
Queries: 1 (clean image) + k * population * (generations + 1) + k * refine^2 (the knock-out), k = 2
with the deletion term, else 1.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.quality.metrics import blurred
from edge_saliency.explain.common import (BudgetExhausted, Classifier, apply_masks, start, make_explanation,
                                          minmax, target_of, upsample)


@dataclass
class DECAMSettings:
    grid: int = 5
    population: int = 24
    generations: int | None = None  # None: fill the budget (DEFAULT_QUERIES without one: 19, 1161 queries)
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
    strategy: str = "current-to-pbest/1"  # DE mutation: "rand/1" (Storn & Price) or "current-to-pbest/1" (JADE, Zhang & Sanderson)
    pbest: float = 0.2  # current-to-pbest: the best fraction of the population one is drawn from
    prune: bool = True  # after the search, knock out each cell of the best member once; zero those that do not matter
    importance: bool = True  # weigh the map's cells by their knock-out fitness drop (not 0/1 kept)
    boxes: float = 0.25  # fraction of the initial population that are random axis-aligned boxes (the rest uniform noise)

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
        if self.strategy not in STRATEGIES:
            raise UserError(f"DE-CAM's strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if not 0 < self.pbest <= 1:
            raise UserError("DE-CAM's pbest fraction must be in (0, 1]")
        if not 0 <= self.boxes <= 1:
            raise UserError("DE-CAM's boxes fraction must be in [0, 1]")
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
    def images_per_member(self) -> int:
        """Each member's preserved image, and its deleted one with the deletion term."""
        return 2 if self.deletion > 0 else 1

    @property
    def per_generation(self) -> int:
        """Queries per scored population."""
        return self.population * self.images_per_member

    @property
    def prune_queries(self) -> int:
        """Queries of the knock-out step: one variant of the best member per cell of the final grid."""
        if not self.prune:
            return 0
        queries = max(self.grid, self.refine) ** 2 * self.images_per_member
        if self.budget is not None and self.budget < 1 + 2 * self.per_generation + queries:
            return 0  # a budget too small for it and one generation: no knock-out (info "pruned_cells": None)
        return queries

    def planned_generations(self) -> int:
        """``generations``, capped by the budget; with neither, as many as fit in DEFAULT_QUERIES."""
        gens = self.generations
        budget = self.budget if self.budget is not None or gens is not None else DEFAULT_QUERIES
        if budget is not None:
            fit = (budget - 1 - self.per_generation - self.prune_queries) // self.per_generation
            gens = fit if gens is None else min(gens, fit)
        return int(max(gens, 0))

    def planned_queries(self) -> int:
        return 1 + self.per_generation * (self.planned_generations() + 1) + self.prune_queries


DEFAULT_QUERIES = 1200  # what a map costs when neither --budget nor --generations is given
FILLS = ("black", "blur")
STRATEGIES = ("rand/1", "current-to-pbest/1")


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


def initial_population(rng: np.random.Generator, n: int, grid: int, boxes: float = 0.0, low: float = 0.15) -> np.ndarray:
    """[n, grid*grid] in [0, 1]: row 0 all ones, the others uniform noise scaled by densities in
    [low, 1]; with ``boxes``, that fraction of the members (the sparsest noise ones, never row 0)
    are random boxes instead (``box_members``)."""
    d = grid * grid
    dens = np.linspace(1.0, low, n)[:, None]
    pop = rng.random((n, d)) * dens
    pop[0] = 1.0
    k = min(n - 1, int(round(boxes * n)))
    if k:
        pop[n - k:] = box_members(rng, k, grid)
    return pop


def box_members(rng: np.random.Generator, n: int, grid: int) -> np.ndarray:
    """[n, grid*grid]: masks that are 1 on a random axis-aligned box of cells and 0 elsewhere; sides
    uniform in 1..grid-1 cells, positions uniform among those that fit."""
    out = np.zeros((n, grid, grid))
    top = max(1, grid - 1)
    for k in range(n):
        h, w = rng.integers(1, top + 1, size=2)
        y, x = rng.integers(0, grid - h + 1), rng.integers(0, grid - w + 1)
        out[k, y:y + h, x:x + w] = 1.0
    return out.reshape(n, -1)


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


def binomial_crossover(pop: np.ndarray, mutant: np.ndarray, CR: float, rng: np.random.Generator) -> np.ndarray:
    """Each gene from ``mutant`` with probability CR, and at least one (j_rand), else from ``pop``."""
    n, d = pop.shape
    cross = rng.random((n, d)) < CR
    cross[np.arange(n), rng.integers(0, d, size=n)] = True
    return np.where(cross, mutant, pop)


def de_rand_1_bin(pop: np.ndarray, F: float, CR: float, rng: np.random.Generator) -> np.ndarray:
    """One generation of DE/rand/1/bin trial vectors for ``pop`` [N, D] in [0, 1]."""
    n = len(pop)
    r = _mutation_indices(rng, n)
    mutant = np.clip(pop[r[:, 0]] + F * (pop[r[:, 1]] - pop[r[:, 2]]), 0.0, 1.0)
    return binomial_crossover(pop, mutant, CR, rng)


def de_current_to_pbest_1_bin(pop: np.ndarray, fit: np.ndarray, F: float, CR: float, p: float,
                              rng: np.random.Generator) -> np.ndarray:
    """One generation of DE/current-to-pbest/1/bin trial vectors (JADE without its parameter
    adaptation and archive): v_i = x_i + F (x_pbest - x_i) + F (x_r1 - x_r2), x_pbest drawn from the
    best ``p`` fraction (at least 2 members) by ``fit``, r1 != r2 != i; clipped to [0, 1]; binomial
    crossover as in rand/1/bin."""
    n = len(pop)
    top = np.argsort(-fit, kind="stable")[:max(2, int(round(p * n)))]
    pb = rng.choice(top, size=n)
    r = _mutation_indices(rng, n)
    mutant = np.clip(pop + F * (pop[pb] - pop) + F * (pop[r[:, 0]] - pop[r[:, 1]]), 0.0, 1.0)
    return binomial_crossover(pop, mutant, CR, rng)


def knock_out(best: np.ndarray, best_fit: float, fitness) -> np.ndarray:
    """The memetic step: ``best`` [D] with each cell set to 0 in turn, all D variants scored in one
    call. Returns each cell's fitness drop [D] (best_fit minus the variant's fitness): a cell whose
    drop is <= 0 (its knock-out does not lower the fitness; the area term then raises it) does not
    matter to the class and is pruned (a cell already at 0 has drop 0: it is 0 in the map anyway)."""
    d = best.size
    variants = np.repeat(best[None], d, axis=0)
    variants[np.arange(d), np.arange(d)] = 0.0
    return best_fit - fitness(variants)


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

    pop = initial_population(rng, s.population, g, s.boxes)
    drops = None  # the knock-out's fitness drops [d] (<= 0: a cell that does not matter), when it ran
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
            if s.strategy == "rand/1":
                trial = de_rand_1_bin(pop, s.F, s.CR, rng)
            else:
                trial = de_current_to_pbest_1_bin(pop, fit, s.F, s.CR, s.pbest, rng)
            tfit, tscore = fitness(trial)
            better = tfit >= fit
            pop[better], fit[better], score[better] = trial[better], tfit[better], tscore[better]
            history.append(float(fit.max()))
        if s.prune_queries and fit is not None:
            drops = knock_out(pop[int(np.argmax(fit))], float(fit.max()), lambda m: fitness(m)[0])
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
    if drops is not None:  # computed on the final grid g
        weight = np.clip(drops, 0, None) / max(drops.max(), 1e-12) if s.importance else (drops > 0).astype(np.float64)
        keep = upsample(weight.reshape(g, g), size, smooth=False)
        mask = mask * keep
    mask = smooth_map(mask, s.smooth, s.grid)
    info = {"settings": asdict(s),
            "strategy": f"DE/{s.strategy}/bin", "map": "elite average" if s.elite > 0 else "best member",
            "generations_run": max(0, len(history) - 1),
            "refined_at": switch + 1 if 0 <= switch < len(history) - 1 else None,  # index in fitness_history
            "best_fitness": best_fit, "best_masked_score": best_score, "best_mask_mean": float(best.mean()),
            "fitness_history": history, "clean_score": p_clean,
            "pruned_cells": None if drops is None else int((drops <= 0).sum())}
    return make_explanation(classifier, "decam", minmax(mask), cls, probs, scorer, time.perf_counter() - t0,
                            interrupted, info)

"""Results of several training seeds summarised as mean ± standard deviation.

One training run is not evidence: float rounding differs between machines, a run diverges from
there, and on the synthetic sets the tail numbers of two seeds can differ by several points. The
comparison tools therefore take every seed's OUTPUT_DIR and give runs that share a row name one
row of ``mean ± std`` (the sample standard deviation, n - 1 in the denominator).

A difference between two rows "exceeds the spread" when ``|mean_a - mean_b| > std_a + std_b``:
the two one-standard-deviation intervals do not overlap. With 3 seeds this is a rough screen, not
a significance test; it is only stated when both rows have at least two seeds.
"""
import math
import os
import statistics
import sys
from collections import OrderedDict

from tabulate import tabulate

from ..errors import ConfigError
from ..safe_files import load_json, load_yaml

# Keys that legitimately differ between the seeds of one row: the seed itself, where each run
# writes, (for a stage 2) the stage-1 weights of the same seed, and the class-statistics file each
# run resolved into its own folder (its contents are compared instead).
CLASS_STATS_KEY = "MODEL.LONG_TAIL.CLASS_STATS"
PER_SEED_KEYS = ("SEED", "OUTPUT_DIR", "MODEL.WEIGHTS", CLASS_STATS_KEY)


def group_runs(names, runs):
    """[(name, [run, ...]), ...] in order of each name's first appearance."""
    groups = OrderedDict()
    for name, run in zip(names, runs):
        groups.setdefault(name, []).append(run)
    return list(groups.items())


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, full + "."))
        else:
            flat[full] = value
    return flat


def run_config(run):
    """The flattened config.yaml that training wrote into a run's OUTPUT_DIR, or None. Read with
    ``yaml.safe_load`` (a Python tag or a corrupt file is one ``LongTailSegError`` line)."""
    path = os.path.join(run, "config.yaml") if os.path.isdir(run) else None
    if path is None or not os.path.isfile(path):
        return None
    config = load_yaml(path)
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"{path} holds a {type(config).__name__}, not a config; it is not the "
                          "config.yaml training writes: delete it or train the run again")
    return _flatten(config or {})


def class_statistics(run, cfg):
    """(counts, groups) of the class-statistics file a run used, or None where it cannot be read."""
    path = cfg.get(CLASS_STATS_KEY) or ""
    candidates = [path, os.path.join(run, os.path.basename(path) or "class_stats.json")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            stats = load_json(candidate)
            if not isinstance(stats, dict):
                raise ConfigError(f"{candidate} holds a {type(stats).__name__}, not class statistics; "
                                  "count them again (tools/compute_class_stats.py)")
            return stats.get("counts"), stats.get("groups")
    return None


def check_seed_group(name, runs):
    """Refuse to average runs that are not seeds of one experiment.

    Every run with a config.yaml must agree with the first on every key except
    :data:`PER_SEED_KEYS` and have counted the same class statistics (same data), and no fixed
    ``SEED`` may appear twice (that is one run counted twice).
    """
    configs = [(run, run_config(run)) for run in runs]
    configs = [(run, cfg) for run, cfg in configs if cfg is not None]
    if not configs:
        return
    first_run, first = configs[0]
    seen_seeds = {}
    for run, cfg in configs:
        for key in sorted(set(first) | set(cfg)):
            if key in PER_SEED_KEYS:
                continue
            if first.get(key) != cfg.get(key):
                raise ConfigError(
                    f"runs named {name!r} differ in {key} ({first.get(key)!r} in {first_run}, "
                    f"{cfg.get(key)!r} in {run}): give runs of different configs different --names")
        seed = cfg.get("SEED")
        if isinstance(seed, int) and seed >= 0:
            if seed in seen_seeds:
                raise ConfigError(
                    f"runs named {name!r} share SEED {seed} ({seen_seeds[seed]} and {run}): "
                    "train each seed with its own SEED")
            seen_seeds[seed] = run
    statistics_of = [(run, class_statistics(run, cfg)) for run, cfg in configs]
    statistics_of = [(run, stats) for run, stats in statistics_of if stats is not None]
    for run, stats in statistics_of[1:]:
        if stats != statistics_of[0][1]:
            raise ConfigError(
                f"runs named {name!r} were trained on different data: the class counts or groups of "
                f"{statistics_of[0][0]} and {run} differ; average seeds on the same data only")


def mean_std(values):
    """(mean, sample std or None, n) of the values that are numbers; (None, None, 0) if none are."""
    numbers = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not numbers:
        return None, None, 0
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return statistics.fmean(numbers), std, len(numbers)


def format_mean_std(values, digits=2):
    """"m ± s" over several seeds, the value alone for one, "n/a" for none."""
    mean, std, _ = mean_std(values)
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def exceeds_spread(values_a, values_b):
    """True or False whether the means differ by more than the sum of the standard deviations;
    None where either side has fewer than two seeds."""
    mean_a, std_a, _ = mean_std(values_a)
    mean_b, std_b, _ = mean_std(values_b)
    if std_a is None or std_b is None:
        return None
    return abs(mean_a - mean_b) > std_a + std_b


def difference_rows(groups, metrics, values_of, decimals=None):
    """Rows of (mean of a row) - (mean of the first row) per metric, "*" where it exceeds the
    spread. ``values_of(runs_results, metric)`` gives the per-seed values of one metric;
    ``decimals`` maps a metric to its decimal places (2 for the others)."""
    (_, reference), rows = groups[0], []
    for name, results in groups[1:]:
        cells = [name]
        for metric in metrics:
            a, b = values_of(results, metric), values_of(reference, metric)
            mean_a, _, _ = mean_std(a)
            mean_b, _, _ = mean_std(b)
            if mean_a is None or mean_b is None:
                cells.append("n/a")
                continue
            mark = "*" if exceeds_spread(a, b) else ""
            cells.append(f"{mean_a - mean_b:+.{(decimals or {}).get(metric, 2)}f}{mark}")
        rows.append(cells)
    return rows


def add_run_arguments(parser, runs_help):
    """The arguments of both comparison tools (compare_results.py, compare_lvis_results.py)."""
    parser.add_argument("runs", nargs="+", help=runs_help)
    parser.add_argument("--dataset", help="evaluation dataset folder under inference/ (default: the first)")
    parser.add_argument("--names", nargs="*", help="row names (default: the run folders' names)")


def run_names(args):
    """One row name per run, or None (the error printed) when --names does not match the runs."""
    names = args.names or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs):
        print("error: give one --names entry per run", file=sys.stderr)
        return None
    return names


def print_differences(groups, metrics, values_of, decimals=None):
    """The difference of every row's mean to the first row's, marked where it exceeds the spread."""
    if len(groups) < 2:
        return
    print(f"\nDifference to {groups[0][0]} (* : larger than the sum of the two standard deviations; "
          "shown only with at least 2 seeds on both sides)")
    print(tabulate(difference_rows(groups, metrics, values_of, decimals), headers=["run"] + list(metrics),
                   tablefmt="pipe", disable_numparse=True))

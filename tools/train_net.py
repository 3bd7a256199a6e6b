#!/usr/bin/env python
"""Train and evaluate LongTailSeg models with Detectron2.

    python tools/train_net.py --config-file configs/synthetic/deeplab_v3_plus.yaml
    python tools/train_net.py --config-file configs/ade20k/deeplab_v3_plus_R_50.yaml --num-gpus 8
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth

Without CUDA, ``--num-gpus N`` runs N CPU processes joined by gloo, also on several machines
(``--num-machines M --machine-rank R --dist-url tcp://HOST_OF_MACHINE_0:PORT`` on each; the launchers
also use PORT + 1). Ctrl-C (SIGINT) or SIGTERM stops
training after the current iteration with a checkpoint and prints the command that resumes it; the
exit status is then 130 (SIGINT) or 143 (SIGTERM); bad input exits with 2.
"""
import contextlib
import sys

from detectron2.engine import default_argument_parser

from longtailseg.engine import Trainer, build_model, launch, load_config, run_folder, setup
from longtailseg.engine.checkpoint import LongTailCheckpointer, check_complete_load
from longtailseg.engine.config_checks import check_repeated_options
from longtailseg.engine.machines import Machines
from longtailseg.engine.stops import StopRequested
from longtailseg.errors import LongTailSegError, one_line
from longtailseg.modeling.extension_points import model_loads_own_weights


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = build_model(cfg, load_weights=False)
        if not model_loads_own_weights(cfg):  # the model ensemble loaded its members when built
            checkpointer = LongTailCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
            check_complete_load(checkpointer, cfg.MODEL.WEIGHTS)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def train(parser, args, argv=None):
    """Check the config and train (or evaluate) as ``args`` say, on this machine's processes;
    raises ``StopRequested`` (SIGINT / SIGTERM) and ``LongTailSegError`` (bad input, on any
    process or machine). ``tools/submit_slurm.py`` runs this in its jobs."""
    # Several machines: their launchers meet first, so that one's config error ends them all.
    machines = Machines(args.num_machines, args.machine_rank, args.dist_url) if args.num_machines > 1 else None
    with contextlib.ExitStack() as held:
        try:
            check_repeated_options(parser, argv)  # argparse would keep the last --config-file only
            cfg = load_config(args.config_file, args.opts)  # a config error stops here, before any process starts
            held.enter_context(run_folder.lock_for(cfg, args))  # --num-gpus N workers share this process's lock
        except LongTailSegError as e:
            if machines is None:
                raise
            machines.start(one_line(e))  # raises it, on every machine
        if machines is not None:
            machines.start()
        return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                      dist_url=args.dist_url, args=(args,), machines=machines)


def run(argv=None):
    parser = default_argument_parser(epilog=__doc__.split("\n", 2)[2])
    parser.description = __doc__.split("\n", 1)[0]
    args = parser.parse_args(argv)
    print("Command Line Args:", args)
    try:
        return train(parser, args, argv)
    except StopRequested as e:  # SIGINT / SIGTERM (engine/stops.py)
        print(e.one_line(sys.argv if argv is None else sys.argv[:1] + list(argv)), file=sys.stderr)
        sys.exit(e.exit_status)
    except LongTailSegError as e:  # on any process (launch raises the root cause)
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()

"""Fine-tune a teacher (BERT-base in the paper) on a GLUE task.

    python run_glue.py --model_type bert --model_name_or_path bert-base-uncased --task_name rte \
        --data_dir ./glue_data/RTE/ --do_lower_case --max_seq_length 128 --do_train \
        --per_gpu_train_batch_size 32 --per_gpu_eval_batch_size 32 --learning_rate 5e-5 \
        --num_train_epochs 3.0 --output_dir ./model/RTE/teacher/

Saves the fine-tuned model with ``save_pretrained`` in output_dir, writes
``eval_results.json`` (the task's official dev metrics) and, with ``--do_predict``, the GLUE
server's test prediction files.
"""

from utils.engine.cli import (
    ArgumentParser,
    add_flag,
    add_training_args,
    check_training_args,
    resolved_options,
    save_run_args,
)
from utils.engine.errors import exit_on_user_error
from utils.engine.features import PadCollator, model_inputs
from utils.engine.loop import train
from utils.engine.models import fine_tuning_loss, forward_arguments, load_classifier, load_tokenizer
from utils.engine.runtime import mark_complete, save_trained, start_run
from utils.tasks.glue import (
    add_glue_data_args,
    check_data_files,
    check_max_seq_length,
    evaluate_splits,
    load_glue_dev_sets,
    load_prediction_sets,
    split_features,
    write_results,
)
from utils.tasks.glue_data import get_task


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="hub name or local directory")
    parser.add_argument("--model_type", default=None, help="accepted for the released command; read from the model's config")
    parser.add_argument("--config_name", default=None, help="accepted for the released command; the model's own config is used")
    parser.add_argument("--tokenizer_name", default=None, help="default: the model's tokenizer")
    add_flag(parser, "--do_lower_case", help="lower-case the text (the uncased models' tokenizers do already)")
    add_flag(parser, "--do_train")
    add_flag(parser, "--do_eval", help="evaluate on dev (always done after --do_train)")
    add_flag(parser, "--do_predict", "--do_test", help="write GLUE test predictions", changes_results=False)
    add_glue_data_args(parser)
    add_training_args(parser, batch_size=8, learning_rate=5e-5, epochs=3.0)
    args = parser.parse_args(argv)
    check_training_args(args)
    return args


@exit_on_user_error
def main(argv=None):
    command = parse_args(argv)
    args, task = resolved_options(command), get_task(command.task_name)
    check_data_files(args, task)  # before any work
    runtime, resume = start_run(args, command)

    tokenizer = load_tokenizer(args.tokenizer_name or args.model_name_or_path, cache_dir=args.cache_dir,
                               do_lower_case=args.do_lower_case)
    model = load_classifier(args.model_name_or_path, task, cache_dir=args.cache_dir, keep_head=not args.do_train)
    check_max_seq_length(args.max_seq_length, tokenizer, model)
    model.to(runtime.device)
    accepted = forward_arguments(model)
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, args.pad_to_max_length, task.is_regression,
                          pad_to_multiple_of=runtime.pad_multiple)

    eval_sets = load_glue_dev_sets(args, task, tokenizer) if args.do_train or args.do_eval else {}
    prediction_sets = load_prediction_sets(args, task, tokenizer)

    def forward(batch):
        return model(**model_inputs(batch, accepted)).logits

    def evaluate(step=None):
        model.eval()
        return evaluate_splits(forward, task, eval_sets, collate, args.per_device_eval_batch_size, runtime)

    if args.do_train:
        train_features, _ = split_features(args, task, "train", args.max_train_samples, tokenizer)
        if runtime.is_main:
            save_run_args(command, args.output_dir)
        result = train(args, runtime, model=model, train_dataset=train_features, collate_fn=collate,
                       compute_loss=fine_tuning_loss(model), tokenizer=tokenizer, evaluate=evaluate, resume_from=resume)
        save_trained(model, tokenizer, args.output_dir, runtime, "fine-tuned model", result)

    model.eval()
    write_results(args, runtime, evaluate, forward, eval_sets, prediction_sets, collate)
    mark_complete(args.output_dir, runtime, "run_glue.py", trained=args.do_train)


if __name__ == "__main__":
    main()

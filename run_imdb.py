"""Fine-tune a teacher (BERT-base in the paper) on IMDB movie-review sentiment.

    python run_imdb.py --model bert-base-uncased --output_dir ./output --output_dir_intermed ./output_intermed

Trains and evaluates by default (as released): the reviews come from the hub's ``imdb``, an
aclImdb folder (``--data_dir``) or csv/json files; the fine-tuned model is saved with
``save_pretrained`` (and its tokenizer) in output_dir, checkpoints and TensorBoard logs go to
output_dir_intermed, and the test-split accuracy to ``eval_results.json``.
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
from utils.tasks.imdb import (
    IMDB,
    add_imdb_data_args,
    check_data_files,
    check_imdb_args,
    evaluate_accuracy,
    imdb_max_seq_length,
    load_features,
    load_imdb_test_set,
    write_eval_results,
)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", "--model", required=True, dest="model_name_or_path",
                        help="hub name or local directory")
    parser.add_argument("--tokenizer_name", default=None, help="default: the model's tokenizer")
    add_flag(parser, "--do_lower_case", help="lower-case the text (the uncased models' tokenizers do already)")
    add_flag(parser, "--do_train", default=True, help="train (default True)")
    add_flag(parser, "--do_eval", default=True, help="evaluate on the test split (default True)")
    add_imdb_data_args(parser)
    add_training_args(parser, batch_size=16, learning_rate=5e-5, epochs=3.0, group_by_length=True,
                      output_dir_intermed=True)
    args = parser.parse_args(argv)
    check_training_args(args)
    check_imdb_args(args)
    return args


@exit_on_user_error
def main(argv=None):
    command = parse_args(argv)
    check_data_files(command)  # before any work
    runtime, resume = start_run(resolved_options(command), command)

    # Model, the run's options (--max_seq_length by default the most tokens the model reads) and evaluation data
    tokenizer = load_tokenizer(command.tokenizer_name or command.model_name_or_path, cache_dir=command.cache_dir,
                               do_lower_case=command.do_lower_case)
    model = load_classifier(command.model_name_or_path, IMDB, cache_dir=command.cache_dir,
                            keep_head=not command.do_train)
    model.to(runtime.device)
    args = resolved_options(command, max_seq_length=imdb_max_seq_length(command.max_seq_length, tokenizer, model))
    accepted = forward_arguments(model)
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, args.pad_to_max_length,
                          pad_to_multiple_of=runtime.pad_multiple)
    eval_set = load_imdb_test_set(args, tokenizer) if args.do_eval else None

    def forward(batch):
        return model(**model_inputs(batch, accepted)).logits

    def evaluate(step=None):
        model.eval()
        return evaluate_accuracy(forward, eval_set, collate, args.per_device_eval_batch_size, runtime)

    if args.do_train:
        train_features = load_features(args, "train", args.max_train_samples, tokenizer)
        if runtime.is_main:
            save_run_args(command, args.output_dir)
        result = train(args, runtime, model=model, train_dataset=train_features, collate_fn=collate,
                       compute_loss=fine_tuning_loss(model), tokenizer=tokenizer,
                       evaluate=evaluate if eval_set else None,
                       resume_from=resume)
        save_trained(model, tokenizer, args.output_dir, runtime, "fine-tuned model", result)

    if eval_set:
        write_eval_results(args, runtime, evaluate())
    mark_complete(args.output_dir, runtime, "run_imdb.py", trained=args.do_train)


if __name__ == "__main__":
    main()

"""Fine-tune a teacher (BERT-base in the paper) on SQuAD v1.1.

    python run_squad.py --model bert-base-uncased --output_dir ./output --output_dir_intermed ./output_intermed

Trains and evaluates by default. Data: ``--data_dir`` with ``--train_file``/``--predict_file``
(SQuAD v1.1 JSON files), or the hub's rajpurkar/squad without them. Saves the fine-tuned model
and its tokenizer with ``save_pretrained`` in output_dir, writes ``eval_results.json``
(exact_match and f1 in percent, as the official script), ``predictions.json`` and
``nbest_predictions.json``; checkpoints and TensorBoard logs go to ``--output_dir_intermed``.
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
from utils.engine.models import forward_arguments, load_question_answerer, load_tokenizer
from utils.engine.runtime import mark_complete, save_trained, start_run
from utils.tasks.squad import (
    add_squad_data_args,
    answer_questions,
    check_squad_args,
    check_window_length,
    load_squad_eval_set,
    load_train_features,
    span_fine_tuning_loss,
    stacked_span_logits,
    write_answers,
)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", "--model", required=True, help="hub name or local directory")
    parser.add_argument("--model_type", default=None,
                        help="accepted for the released command; read from the model's config")
    parser.add_argument("--config_name", default=None,
                        help="accepted for the released command; the model's own config is used")
    parser.add_argument("--tokenizer_name", default=None, help="default: the model's tokenizer (a fast one)")
    add_flag(parser, "--do_lower_case", help="lower-case the text (the uncased models' tokenizers do already)")
    add_flag(parser, "--do_train", default=True, help="train (default True)")
    add_flag(parser, "--do_eval", default=True, help="evaluate on the predict file (default True)")
    add_squad_data_args(parser)
    add_training_args(parser, batch_size=16, learning_rate=5e-5, epochs=3.0, output_dir_intermed=True)
    args = parser.parse_args(argv)
    check_training_args(args)
    check_squad_args(args)
    return args


@exit_on_user_error
def main(argv=None):
    command = parse_args(argv)
    args = resolved_options(command)
    runtime, resume = start_run(args, command)

    tokenizer = load_tokenizer(args.tokenizer_name or args.model_name_or_path, cache_dir=args.cache_dir,
                               do_lower_case=args.do_lower_case)
    model = load_question_answerer(args.model_name_or_path, cache_dir=args.cache_dir, keep_head=not args.do_train)
    check_window_length(args, tokenizer, model)
    model.to(runtime.device)
    accepted = forward_arguments(model)
    collate = PadCollator({"": tokenizer.pad_token_id}, args.max_seq_length, args.pad_to_max_length,
                          pad_to_multiple_of=runtime.pad_multiple)
    eval_set = load_squad_eval_set(args, tokenizer) if args.do_eval else None

    def forward(batch):
        return stacked_span_logits(model(**model_inputs(batch, accepted)), args.max_seq_length)

    def answer():
        model.eval()
        return answer_questions(forward, eval_set, collate, args.per_device_eval_batch_size, runtime, args)

    if args.do_train:
        train_features = load_train_features(args, tokenizer)
        if runtime.is_main:
            save_run_args(command, args.output_dir)
        result = train(args, runtime, model=model, train_dataset=train_features, collate_fn=collate,
                       compute_loss=span_fine_tuning_loss(model, args.pad_to_max_length), tokenizer=tokenizer,
                       evaluate=(lambda step: answer().metrics) if eval_set else None, resume_from=resume)
        save_trained(model, tokenizer, args.output_dir, runtime, "fine-tuned model", result)

    if eval_set is not None:
        answers = answer()
        if runtime.is_main:
            write_answers(args, answers)
    mark_complete(args.output_dir, runtime, "run_squad.py", trained=args.do_train)


if __name__ == "__main__":
    main()

/* `saefw tokenize`: text datasets (JSONL, JSONL.zst, plain text) to a token file. */
#ifndef SAEFW_TOKENIZE_CMD_H
#define SAEFW_TOKENIZE_CMD_H

/* argv[0] is "tokenize"; returns the process exit status (messages go to stderr). */
int saefw_cmd_tokenize(int argc, char **argv);

#endif

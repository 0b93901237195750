/* The `saefw tokens` subcommands. */
#ifndef SAEFW_TOKENS_CMD_H
#define SAEFW_TOKENS_CMD_H

/* argv[0] is "tokens"; returns the process exit status. */
int saefw_cmd_tokens(int argc, char **argv);

#endif

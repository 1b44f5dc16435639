/*
 * bubble-sandbox-exec: the one step between the service and bwrap. It replaces the former chain
 * /bin/sh wrapper -> env -i -> [nsenter --net] -> setpriv, which cost three to four execs per
 * sandbox, with a single exec that does the same work in the same order:
 *
 *   1. rlimits: RLIMIT_CORE 0, RLIMIT_NOFILE, RLIMIT_FSIZE, RLIMIT_CPU (soft = hard, as the
 *      shell's `ulimit` set them);
 *   2. joins each cgroup given (writes its own pid to each cgroup.procs), so bwrap and the program
 *      are limited and counted from their first instruction;
 *   3. joins a network namespace when given (opens the path, setns(CLONE_NEWNET), closes the
 *      descriptor, so no nsfs descriptor reaches the sandbox); this needs root, so before 4;
 *   4. drops to the sandbox's host identity: no supplementary groups, then gid, then uid (real,
 *      effective and saved), and checks that root cannot be taken back;
 *   5. sets no_new_privs;
 *   6. execs the program (bwrap, by absolute path) with an EMPTY environment: bwrap is pid 1 in
 *      the sandbox and its /proc/1/environ is readable from inside.
 *
 * Why C, written by hand, and not a Node addon or a script: this is the security boundary where
 * root becomes the sandbox uid. It must run in the child between fork and exec, which Node's
 * child_process cannot do for us (no setns, no rlimits, no cgroup join, no no_new_privs there); a
 * shell brings its own environment variables and a lookup path, and util-linux's tools add an exec
 * each. A hundred lines of libc calls, each checked, is small enough to review in full. Any failure
 * prints "bubble-sandbox-exec: <what>: <why>" and exits 125 before anything is run (127/126 when
 * the program cannot be executed, as a shell would), so no step is ever silently skipped.
 *
 * Built by scripts/build-exec-helper.sh (setup.sh, .ci/run and the Dockerfile call it).
 *
 * Usage: bubble-sandbox-exec --nofile N --fsize BYTES --cpu SECONDS
 *          [--cgroup-procs FILE]... [--netns PATH] [--uid UID --gid GID] [--no-new-privs]
 *          -- PROGRAM [ARG]...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_CGROUPS 16

static void die(const char *what, const char *detail, int err) {
    if (err != 0) fprintf(stderr, "bubble-sandbox-exec: %s%s%s: %s\n", what, detail ? " " : "", detail ? detail : "", strerror(err));
    else fprintf(stderr, "bubble-sandbox-exec: %s%s%s\n", what, detail ? " " : "", detail ? detail : "");
    _exit(125);
}

/* A decimal number without sign, spaces or trailing characters, at most max. */
static unsigned long long number(const char *flag, const char *text, unsigned long long max) {
    if (text == NULL || text[0] < '0' || text[0] > '9') die("invalid value for", flag, 0);
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == NULL || *end != '\0' || v > max) die("invalid value for", flag, 0);
    return v;
}

static void limit(int resource, const char *name, unsigned long long value) {
    struct rlimit rl = { .rlim_cur = (rlim_t)value, .rlim_max = (rlim_t)value };
    if (setrlimit(resource, &rl) != 0) die("setrlimit", name, errno);
}

static void join_cgroup(const char *procs_file) {
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    int fd = open(procs_file, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open", procs_file, errno);
    if (write(fd, pid, (size_t)len) != len) die("cannot join cgroup", procs_file, errno);
    if (close(fd) != 0) die("cannot join cgroup", procs_file, errno);
}

static void join_netns(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open network namespace", path, errno);
    if (setns(fd, CLONE_NEWNET) != 0) die("setns", path, errno);
    if (close(fd) != 0) die("close network namespace", path, errno);
}

static void drop_identity(uid_t uid, gid_t gid) {
    if (setgroups(0, NULL) != 0) die("setgroups", NULL, errno);
    if (setresgid(gid, gid, gid) != 0) die("setresgid", NULL, errno);
    if (setresuid(uid, uid, uid) != 0) die("setresuid", NULL, errno);
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (getresuid(&r, &e, &s) != 0 || r != uid || e != uid || s != uid) die("uid did not change", NULL, 0);
    if (getresgid(&rg, &eg, &sg) != 0 || rg != gid || eg != gid || sg != gid) die("gid did not change", NULL, 0);
    if (getgroups(0, NULL) != 0) die("supplementary groups remain", NULL, 0);
    if (setuid(0) == 0) die("root could be taken back", NULL, 0);
}

int main(int argc, char **argv) {
    long long nofile = -1, fsize = -1, cpu = -1, uid = -1, gid = -1;
    const char *cgroups[MAX_CGROUPS];
    int ncgroups = 0;
    const char *netns = NULL;
    int no_new_privs = 0;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--") == 0) { i++; break; }
        if (strcmp(a, "--no-new-privs") == 0) { no_new_privs = 1; continue; }
        if (v == NULL) die("missing value for", a, 0);
        if (strcmp(a, "--nofile") == 0) nofile = (long long)number(a, v, 1ULL << 30);
        else if (strcmp(a, "--fsize") == 0) fsize = (long long)number(a, v, 1ULL << 62);
        else if (strcmp(a, "--cpu") == 0) cpu = (long long)number(a, v, 1ULL << 40);
        else if (strcmp(a, "--uid") == 0) uid = (long long)number(a, v, 0xfffffffeULL);
        else if (strcmp(a, "--gid") == 0) gid = (long long)number(a, v, 0xfffffffeULL);
        else if (strcmp(a, "--netns") == 0) netns = v;
        else if (strcmp(a, "--cgroup-procs") == 0) {
            if (ncgroups == MAX_CGROUPS) die("too many cgroups", NULL, 0);
            cgroups[ncgroups++] = v;
        } else die("unknown option", a, 0);
        i++;
    }
    if (nofile < 0 || fsize < 0 || cpu < 0) die("--nofile, --fsize and --cpu are required", NULL, 0);
    if ((uid < 0) != (gid < 0)) die("--uid and --gid go together", NULL, 0);
    /* Dropping "to" root would be no drop at all: the settings never allow it, so never do it. */
    if (uid == 0 || gid == 0) die("refusing to run the sandbox as uid or gid 0", NULL, 0);
    if (i >= argc || argv[i][0] != '/') die("the program must follow -- as an absolute path", NULL, 0);

    limit(RLIMIT_CORE, "core", 0);
    limit(RLIMIT_NOFILE, "nofile", (unsigned long long)nofile);
    limit(RLIMIT_FSIZE, "fsize", (unsigned long long)fsize);
    limit(RLIMIT_CPU, "cpu", (unsigned long long)cpu);
    for (int c = 0; c < ncgroups; c++) join_cgroup(cgroups[c]);
    if (netns != NULL) join_netns(netns);
    if (uid >= 0) drop_identity((uid_t)uid, (gid_t)gid);
    if (no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("prctl(PR_SET_NO_NEW_PRIVS)", NULL, errno);

    char *empty_env[] = { NULL };
    execve(argv[i], &argv[i], empty_env);
    int err = errno;
    fprintf(stderr, "bubble-sandbox-exec: cannot execute %s: %s\n", argv[i], strerror(err));
    return err == ENOENT || err == ENOTDIR ? 127 : 126;
}

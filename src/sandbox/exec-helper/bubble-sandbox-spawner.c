/*
 * bubble-sandbox-spawner: the spawn helper. A small long-lived process, started once by the
 * service, that forks and execs bubble-sandbox-exec for every sandbox, so the service (a ~150 MB
 * Node process) is never forked on its event loop: libuv's spawn copies the whole parent's page
 * tables and waits for the exec, which cost about a fifth of the main thread per execution.
 *
 * It speaks Node's IPC channel (NODE_CHANNEL_FD, 'json' serialization: one JSON object a line).
 *   service -> spawner:
 *     {"s":"<base64 request>"}      spawn (request layout below)
 *     {"k":ID,"sig":N}              send signal N to request ID's process if it has not been reaped
 *     {"cmd":"NODE_HANDLE_ACK"}     Node's receipt for a descriptor (sent by Node itself)
 *   spawner -> service:
 *     {"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"id":ID,"fd":K}}  + the parent end of
 *                                   socket K (0, 1, 2 or an extra pipe) in SCM_RIGHTS; the next
 *                                   descriptor is sent only after Node's ACK, as Node requires
 *     {"id":ID,"pid":P}             after every descriptor of ID
 *     {"id":ID,"error":"...","errno":E}  nothing was started
 *     {"id":ID,"code":C,"signal":S} the process was reaped (S: signal number or 0)
 *
 * Request (little-endian): u32 id, u32 argc, argc NUL-terminated strings (argv[0] is the exec
 * helper's absolute path), u32 nfds, then for fd 3, 4, ...: u8 kind and its data:
 *     0 socket: a socketpair whose parent end goes back as a handle (an extra pipe);
 *     1 payload: u32 length + bytes, put in a memfd at offset 0 (bwrap's --args, --seccomp, files);
 *     2 directory: NUL-terminated path, opened O_PATH|O_NOFOLLOW|O_DIRECTORY here: a bind source
 *       replaced by a symlink fails closed, with ELOOP or ENOTDIR, and nothing starts.
 * Descriptors 0, 1 and 2 are always socketpairs, like libuv's 'pipe' stdio.
 *
 * The child gets exactly descriptors 0 .. 2 + nfds (close_range closes the rest) and an empty
 * environment. The spawner dies with the service (PR_SET_PDEATHSIG, and EOF on the channel), and
 * kills its children when it goes: bwrap's --die-with-parent takes each sandbox down with them.
 * A pid is signalled only while it is in the table, and it leaves the table when it is reaped in
 * the same loop, so a reused pid is never hit.
 *
 * Built by scripts/build-exec-helper.sh beside the exec helper (setup.sh, .ci/run, the Dockerfile).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_FDS 256
#define MAX_ARGS 65536
#define MAX_LIVE 4096

static int channel = -1;

struct child { uint32_t id; pid_t pid; };
static struct child live[MAX_LIVE];
static int nlive = 0;

/* Outgoing messages, in order; one carrying a descriptor holds the queue until Node's ACK. */
struct out { char *text; int fd; struct out *next; };
static struct out *out_head = NULL, *out_tail = NULL;
static int waiting_ack = 0;

static void fail(const char *what) {
    fprintf(stderr, "bubble-sandbox-spawner: %s: %s\n", what, strerror(errno));
    exit(125);
}

static void enqueue(const char *text, int fd) {
    struct out *o = calloc(1, sizeof *o);
    if (o == NULL || (o->text = strdup(text)) == NULL) fail("out of memory");
    o->fd = fd;
    if (out_tail) out_tail->next = o; else out_head = o;
    out_tail = o;
}

static void send_all(const char *text, int fd) {
    size_t len = strlen(text), off = 0;
    while (off < len) {
        struct iovec iov = { .iov_base = (char *)text + off, .iov_len = len - off };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cm;
        if (fd >= 0 && off == 0) {
            memset(&cm, 0, sizeof cm);
            msg.msg_control = cm.buf;
            msg.msg_controllen = sizeof cm.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        ssize_t n = sendmsg(channel, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { struct pollfd p = { channel, POLLOUT, 0 }; poll(&p, 1, -1); continue; }
            fail("write to the service");
        }
        off += (size_t)n;
    }
}

static void flush(void) {
    while (out_head != NULL && !waiting_ack) {
        struct out *o = out_head;
        send_all(o->text, o->fd);
        if (o->fd >= 0) { close(o->fd); waiting_ack = 1; }
        out_head = o->next;
        if (out_head == NULL) out_tail = NULL;
        free(o->text);
        free(o);
    }
}

/* Request parsing: a cursor over the decoded bytes; any overrun marks the request bad. */
struct cur { const unsigned char *p, *end; int bad; };
static uint32_t u32(struct cur *c) {
    if (c->end - c->p < 4) { c->bad = 1; return 0; }
    uint32_t v = (uint32_t)c->p[0] | (uint32_t)c->p[1] << 8 | (uint32_t)c->p[2] << 16 | (uint32_t)c->p[3] << 24;
    c->p += 4;
    return v;
}
static char *str(struct cur *c) {
    const unsigned char *z = memchr(c->p, 0, (size_t)(c->end - c->p));
    if (z == NULL) { c->bad = 1; return NULL; }
    char *s = (char *)c->p;
    c->p = z + 1;
    return s;
}

static size_t b64decode(const char *in, size_t len, unsigned char *out) {
    static signed char map[256];
    static int ready = 0;
    if (!ready) {
        memset(map, -1, sizeof map);
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; i < 64; i++) map[(unsigned char)a[i]] = (signed char)i;
        ready = 1;
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        signed char v = map[(unsigned char)in[i]];
        if (v < 0) continue; /* '=' padding */
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) { bits -= 8; out[o++] = (unsigned char)(acc >> bits); }
    }
    return o;
}

static void report_error(uint32_t id, const char *what, int err) {
    char line[512];
    snprintf(line, sizeof line, "{\"id\":%u,\"error\":\"%s\",\"errno\":%d}\n", id, what, err);
    enqueue(line, -1);
}

static void spawn_request(const char *b64, size_t len) {
    unsigned char *buf = malloc(len / 4 * 3 + 3);
    if (buf == NULL) fail("out of memory");
    struct cur c = { buf, buf + b64decode(b64, len, buf), 0 };
    uint32_t id = u32(&c);
    uint32_t argc = u32(&c);
    char **argv = NULL;
    int fds[MAX_FDS + 3], parent_ends[MAX_FDS + 3];
    int nfds = 0;
    for (int i = 0; i < MAX_FDS + 3; i++) fds[i] = parent_ends[i] = -1;
    if (c.bad || argc == 0 || argc > MAX_ARGS) { report_error(id, "bad request", EINVAL); goto out; }
    argv = calloc(argc + 1, sizeof *argv);
    if (argv == NULL) fail("out of memory");
    for (uint32_t i = 0; i < argc; i++) argv[i] = str(&c);
    uint32_t extra = u32(&c);
    if (c.bad || extra > MAX_FDS || argv[0][0] != '/') { report_error(id, "bad request", EINVAL); goto out; }
    nfds = 3 + (int)extra;
    for (int k = 0; k < nfds; k++) {
        int kind = k < 3 ? 0 : (c.p < c.end ? *c.p++ : -1);
        if (kind == 0) {
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) { report_error(id, "socketpair", errno); goto out; }
            parent_ends[k] = sv[0];
            fds[k] = sv[1];
            /* The service's end non-blocking, as libuv makes its own child pipes: Node takes a
             * received descriptor as it is, and a blocking one would freeze its event loop on a
             * write the sandbox does not read (a full stdin). The sandbox's end stays blocking. */
            int fl = fcntl(sv[0], F_GETFL);
            if (fl < 0 || fcntl(sv[0], F_SETFL, fl | O_NONBLOCK) != 0) { report_error(id, "fcntl", errno); goto out; }
        } else if (kind == 1) {
            uint32_t n = u32(&c);
            if (c.bad || (uint32_t)(c.end - c.p) < n) { report_error(id, "bad request", EINVAL); goto out; }
            int m = memfd_create("bubble-sandbox-payload", MFD_CLOEXEC);
            if (m < 0) { report_error(id, "memfd_create", errno); goto out; }
            fds[k] = m;
            for (uint32_t off = 0; off < n;) {
                ssize_t w = write(m, c.p + off, n - off);
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) { report_error(id, "write payload", errno); goto out; }
                off += (uint32_t)w;
            }
            c.p += n;
            if (lseek(m, 0, SEEK_SET) != 0) { report_error(id, "lseek payload", errno); goto out; }
        } else if (kind == 2) {
            const char *dir = str(&c);
            if (c.bad) { report_error(id, "bad request", EINVAL); goto out; }
            int d = open(dir, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
            if (d < 0) { report_error(id, "cannot open a bind source", errno); goto out; }
            fds[k] = d;
        } else { report_error(id, "bad request", EINVAL); goto out; }
    }
    if (c.bad || nlive == MAX_LIVE) { report_error(id, nlive == MAX_LIVE ? "too many processes" : "bad request", EINVAL); goto out; }

    pid_t pid = fork();
    if (pid < 0) { report_error(id, "fork", errno); goto out; }
    if (pid == 0) {
        /* The child: exactly 0 .. nfds-1, then the exec helper with an empty environment. Every
         * source is first moved at or above nfds so no dup2 overwrites one still to be placed. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int k = 0; k < nfds; k++) {
            int high = fcntl(fds[k], F_DUPFD_CLOEXEC, nfds);
            if (high < 0) _exit(125);
            fds[k] = high;
        }
        for (int k = 0; k < nfds; k++) if (dup2(fds[k], k) != k) _exit(125);
        if (syscall(SYS_close_range, (unsigned)nfds, ~0U, 0) != 0) _exit(125);
        char *empty_env[] = { NULL };
        execve(argv[0], argv, empty_env);
        _exit(errno == ENOENT ? 127 : 126);
    }
    live[nlive].id = id;
    live[nlive].pid = pid;
    nlive++;
    char line[256];
    for (int k = 0; k < nfds; k++) {
        if (parent_ends[k] < 0) continue;
        snprintf(line, sizeof line, "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{\"id\":%u,\"fd\":%d}}\n", id, k);
        enqueue(line, parent_ends[k]); /* closed once sent */
        parent_ends[k] = -1;
    }
    snprintf(line, sizeof line, "{\"id\":%u,\"pid\":%d}\n", id, (int)pid);
    enqueue(line, -1);
out:
    for (int k = 0; k < nfds; k++) {
        if (fds[k] >= 0) close(fds[k]);
        if (parent_ends[k] >= 0) close(parent_ends[k]);
    }
    free(argv);
    free(buf);
}

static int is_live(pid_t pid) {
    for (int i = 0; i < nlive; i++) if (live[i].pid == pid) return 1;
    return 0;
}

/*
 * SIGKILL to the children of `pid` (from /proc: the process is not reaped yet, so its list is its
 * own), all of them or only those we did not start. Two uses:
 * - bwrap's sandbox child asks for SIGKILL on its parent's death (--die-with-parent) only once it
 *   runs: killed in the instant after its clone, bwrap would leave that child (the sandbox's
 *   init, in its own PID namespace) running with no one to end it. So a SIGKILL goes to the
 *   children of the process first, then to the process: ending the init ends its namespace.
 * - The spawner is a child subreaper: a sandbox init that outlived its bwrap anyway (its children
 *   read a moment too early) is handed to us instead of to the host's init. Any child of ours
 *   that is not one we started is such a stray: it is killed, and reaped later.
 */
static void kill_children(pid_t pid, int strays_only) {
    char path[64], buf[65536];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = '\0';
    for (char *p = buf, *end; *p != '\0'; p = end) {
        long child = strtol(p, &end, 10);
        if (end == p) break;
        if (child > 0 && !(strays_only && is_live((pid_t)child))) kill((pid_t)child, SIGKILL);
    }
}

static void kill_request(uint32_t id, int sig) {
    for (int i = 0; i < nlive; i++) {
        if (live[i].id != id) continue;
        if (sig == SIGKILL) kill_children(live[i].pid, 0);
        kill(live[i].pid, sig);
    }
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < nlive; i++) {
            if (live[i].pid != pid) continue;
            char line[128];
            snprintf(line, sizeof line, "{\"id\":%u,\"code\":%d,\"signal\":%d}\n", live[i].id,
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
            enqueue(line, -1);
            live[i] = live[--nlive];
            break;
        }
    }
    kill_children(getpid(), 1);
}

/* One JSON line from the service; only the three shapes above are accepted. */
static void handle_line(char *line, size_t len) {
    if (strncmp(line, "{\"s\":\"", 6) == 0 && len >= 8 && strcmp(line + len - 2, "\"}") == 0) {
        spawn_request(line + 6, len - 8);
    } else if (strncmp(line, "{\"k\":", 5) == 0) {
        char *end = NULL;
        unsigned long id = strtoul(line + 5, &end, 10);
        int sig = SIGKILL;
        if (end && strncmp(end, ",\"sig\":", 7) == 0) sig = (int)strtol(end + 7, NULL, 10);
        if (sig > 0 && sig < 65) kill_request((uint32_t)id, sig);
    } else if (strstr(line, "\"NODE_HANDLE_ACK\"") != NULL) {
        waiting_ack = 0;
    } else if (strstr(line, "\"NODE_HANDLE_NACK\"") != NULL) {
        fprintf(stderr, "bubble-sandbox-spawner: the service refused a descriptor\n");
        exit(125);
    }
}

int main(void) {
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail("prctl(PR_SET_PDEATHSIG)");
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) fail("prctl(PR_SET_CHILD_SUBREAPER)");
    /* A process group of its own: a signal to the service's group (a supervisor's or a terminal's
     * SIGTERM or ^C) is the service's to act on; it ends us through the channel, as on any stop. */
    if (setpgid(0, 0) != 0) fail("setpgid");
    if (getppid() != parent) return 125; /* the service is already gone */
    const char *fdtext = getenv("NODE_CHANNEL_FD");
    if (fdtext == NULL) { fprintf(stderr, "bubble-sandbox-spawner: NODE_CHANNEL_FD is not set\n"); return 125; }
    channel = atoi(fdtext);
    fcntl(channel, F_SETFD, FD_CLOEXEC);

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &chld, NULL) != 0) fail("sigprocmask");
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) fail("signalfd");

    size_t cap = 1 << 16, have = 0;
    char *in = malloc(cap);
    if (in == NULL) fail("out of memory");
    for (;;) {
        flush();
        struct pollfd p[2] = { { channel, POLLIN, 0 }, { sfd, POLLIN, 0 } };
        if (poll(p, 2, -1) < 0) { if (errno == EINTR) continue; fail("poll"); }
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si) {}
            reap();
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (cap - have < 4096) {
                cap *= 2;
                if ((in = realloc(in, cap)) == NULL) fail("out of memory");
            }
            ssize_t n = recv(channel, in + have, cap - have - 1, MSG_CMSG_CLOEXEC);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break; /* the service is gone or closed the channel */
            have += (size_t)n;
            char *start = in, *nl;
            while ((nl = memchr(start, '\n', (size_t)(in + have - start))) != NULL) {
                *nl = '\0';
                handle_line(start, (size_t)(nl - start));
                start = nl + 1;
            }
            have -= (size_t)(start - in);
            memmove(in, start, have);
        }
    }
    /* The service went away: nothing it started may outlive it. */
    for (int i = 0; i < nlive; i++) {
        kill_children(live[i].pid, 0);
        kill(live[i].pid, SIGKILL);
    }
    return 0;
}

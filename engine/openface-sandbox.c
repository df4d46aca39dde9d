/*
 * openface-sandbox: runs one program as the sandbox user, for the worker.
 *
 *   openface-sandbox --ids            prints "<uid> <gid>" the program will run as
 *   openface-sandbox PROGRAM ARGS...  runs PROGRAM (an absolute path) as that user
 *
 * OpenFace parses untrusted media. The worker holds storage credentials, so
 * OpenFace must not run as the worker's user: a different uid cannot read the
 * worker's memory or /proc/<pid>/environ. Its group is the worker's own (a
 * root worker's is SANDBOX_GID instead), so the worker shares a batch folder
 * with it by the folder's group and mode alone. In the image this file
 * carries CAP_SETUID, CAP_SETGID and CAP_KILL, and only the worker's group
 * may run it.
 *
 * The helper forks: the child drops to the sandbox user and executes PROGRAM;
 * the parent waits and exits as the child did (a signal is raised again), so
 * the worker sees OpenFace's own exit code. The worker cannot signal a process
 * of another user, so it kills the parent instead: both processes carry a
 * parent-death signal, and the child dies with the parent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SANDBOX_UID
#define SANDBOX_UID 10002
#endif
#ifndef SANDBOX_GID
#define SANDBOX_GID 10002
#endif

static void fail(const char *what) {
    fprintf(stderr, "openface-sandbox: %s: %s\n", what, strerror(errno));
    _exit(126);
}

/* Keep only the capabilities in ``keep`` (a mask of the first 32): none, or CAP_KILL. */
static void keep_capabilities(unsigned keep) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    data[0].effective = data[0].permitted = keep;
    if (syscall(SYS_capset, &header, data) != 0) fail("dropping capabilities");
}

/* A death signal, checked against a parent that died before it was set. */
static void die_with_parent(pid_t parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail("setting the parent-death signal");
    if (getppid() != parent) _exit(126);
}

static gid_t sandbox_gid(void) {
    return getgid() == 0 ? SANDBOX_GID : getgid();
}

static void become_sandbox_user(void) {
    gid_t gid = sandbox_gid();
    if (setgroups(0, NULL) != 0) fail("clearing supplementary groups");
    if (setresgid(gid, gid, gid) != 0) fail("setting the group");
    if (setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID) != 0) fail("setting the user");
    /* From one unprivileged user to another the kernel keeps file capabilities: drop them first. */
    keep_capabilities(0);
    if (setresuid(0, 0, 0) == 0 || getuid() != SANDBOX_UID) {
        errno = EPERM;
        fail("the user change did not hold");
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--ids") == 0) {
        printf("%d %d\n", SANDBOX_UID, (int)sandbox_gid());
        return 0;
    }
    if (argc < 2 || argv[1][0] != '/') {
        fprintf(stderr, "usage: openface-sandbox --ids | openface-sandbox /absolute/program [args...]\n");
        return 2;
    }
    pid_t worker = getppid();
    die_with_parent(worker);
    pid_t helper = getpid();
    pid_t child = fork();
    if (child < 0) fail("fork");
    if (child == 0) {
        become_sandbox_user(); /* clears the death signal: set it again below */
        die_with_parent(helper);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("setting no_new_privs");
        umask(007); /* the worker shares the batch folder through its group */
        execv(argv[1], argv + 1);
        fail(argv[1]);
    }
    /* The kernel sends the child its death signal with the parent's rights: another
     * user's process may be signalled only with CAP_KILL, so the parent keeps that one. */
    keep_capabilities(1u << CAP_KILL);
    int status;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) fail("waitpid");
    }
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        prctl(PR_SET_DUMPABLE, 0); /* no core file of the helper for OpenFace's crash */
        raise(WTERMSIG(status));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 126;
}

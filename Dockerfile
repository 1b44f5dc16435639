# syntax=docker/dockerfile:1
# The bubble-sandbox service as a container image: Debian 12 (bookworm), Node 20, bubblewrap and
# the host tools the sandbox uses, the built execution environments, a HEALTHCHECK.
#
#   docker build -t bubble-sandbox:0.1.0 .
#   docker run --rm --privileged -p 8000:8000 -e BUBBLE_SANDBOX_API_KEY=$(openssl rand -hex 24) \
#     -v bubble-workspaces:/var/lib/bubble-sandbox bubble-sandbox:0.1.0
#
# Reproducible from the lockfile: the JavaScript dependencies come from package-lock.json
# (npm ci), the TypeScript is compiled in the image, and the base is pinned by tag; pin it by
# digest for bit-for-bit rebuilds (docker buildx imagetools inspect node:20.19-bookworm-slim,
# then NODE_IMAGE=node:20.19-bookworm-slim@sha256:...). Debian packages come from the bookworm
# suite of the build date (set DEBIAN_SNAPSHOT to a snapshot.debian.org date to freeze them too).
#
# Root, and why: as root the service gives each session its own unprivileged host uid (build/bubble-sandbox-exec),
# writes cgroup limits, loop-mounts the per-session quota images, watches them with fanotify and
# builds per-session network namespaces; the sandboxed code itself never runs as root (see the
# README's Security model and "Running on many machines" for the securityContext). Run it as a
# non-root user (docker run --user 10001) and it still works with fewer guarantees: rlimits instead
# of cgroups, no disk quotas, network mode none only, one host uid for every session.
ARG NODE_IMAGE=node:20.19-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
# The exec helper (the step between the service and bwrap) and the spawn helper (which forks it) are
# C, linked statically (scripts/build-exec-helper.sh builds both), so the final
# image needs no compiler.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY src/sandbox/exec-helper ./src/sandbox/exec-helper
COPY scripts/build-exec-helper.sh ./scripts/build-exec-helper.sh
RUN bash scripts/build-exec-helper.sh
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
ARG DEBIAN_SNAPSHOT=
# bubblewrap: the sandbox; python3 + venv: the launcher, the interpreter protocol and the
# environments; util-linux: setpriv, nsenter, unshare, losetup, prlimit; e2fsprogs: mkfs.ext4 for
# quota images; slirp4netns + nftables: network mode outbound; tini: reaps orphans as pid 1 and
# passes SIGTERM on (the service drains on it); ca-certificates: HTTPS from allowlist sessions;
# zstd: `rootfs import` of .tar.zst archives.
RUN set -eux; \
    if [ -n "$DEBIAN_SNAPSHOT" ]; then \
      echo "deb [check-valid-until=no] http://snapshot.debian.org/archive/debian/${DEBIAN_SNAPSHOT} bookworm main" > /etc/apt/sources.list.d/snapshot.list; \
      rm -f /etc/apt/sources.list.d/debian.sources; \
    fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      bubblewrap python3 python3-venv util-linux mount e2fsprogs slirp4netns nftables tini ca-certificates zstd; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /opt/bubble-sandbox
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/build ./build
COPY bin ./bin
COPY scripts ./scripts
COPY environments ./environments
# The environments' venvs are built here, against this image's /usr/bin/python3 (the sandbox
# mounts /usr); with no package index reachable the script installs their Debian packages.
RUN bash scripts/build-environments.sh && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/bubble-sandbox/workspaces && chmod 0711 /var/lib/bubble-sandbox /var/lib/bubble-sandbox/workspaces

# Listening beyond loopback needs BUBBLE_SANDBOX_API_KEY (the service refuses to start without it).
ENV NODE_ENV=production \
    BUBBLE_SANDBOX_HOST=0.0.0.0 \
    BUBBLE_SANDBOX_PORT=8000 \
    BUBBLE_SANDBOX_WORKSPACE_DIR=/var/lib/bubble-sandbox/workspaces \
    BUBBLE_SANDBOX_ENVIRONMENTS_DIR=/opt/bubble-sandbox/environments
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.BUBBLE_SANDBOX_PORT||8000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "bin/bubble-sandbox.js", "serve"]

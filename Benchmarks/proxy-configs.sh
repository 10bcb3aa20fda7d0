# The peers' configurations for run.sh and profile.sh (sourced, not run).
#
# write_configs writes $WORK/nginx.conf and $WORK/haproxy.cfg with the listen port left as the
# placeholder PORT. It reads WORK, THREADS (workers per proxy), NOFILE (descriptor limit) and
# ECHO_PORT (the echo backend). nginx: the documented WebSocket setup plus an upstream keepalive pool
# for plain HTTP; HAProxy: mode http with a 1 h tunnel timeout.
write_configs() {
    cat >"$WORK/nginx.conf" <<EOF
worker_processes $THREADS;
worker_rlimit_nofile $NOFILE;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections $((NOFILE - 100)); }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-body;
    proxy_temp_path $WORK/nginx-proxy;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    upstream echo { server 127.0.0.1:$ECHO_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:PORT;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
        }
    }
}
EOF
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread $THREADS
    maxconn $(((NOFILE - 100) / 2))
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
frontend fe
    bind 127.0.0.1:PORT
    maxconn $(((NOFILE - 100) / 2))
    default_backend be
backend be
    server echo 127.0.0.1:$ECHO_PORT
EOF
}

#!/usr/bin/env bash
# make-certs.sh - a small private CA plus the Mosquitto broker certificate
# (and optional client certificates) for thermalert, in a form that rustls /
# webpki accepts: X.509 v3, CA with keyCertSign, leaf certificates with
# subjectAltName, SHA-256 signatures, EC P-256 keys (PKCS#8 PEM).
#
# Needs only openssl (1.1.1 or 3.x) and coreutils.  Run with --help for usage.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)

usage() {
    cat <<EOF
Usage: $prog [options] [HOSTNAME_OR_IP...]

Creates (in DIR):
  ca.crt, ca.key          self-signed CA (ca.key mode 600; keep it private)
  server.crt, server.key  broker certificate signed by the CA (key mode 600)
  NAME.crt, NAME.key      client certificate for each --client NAME (mTLS)

Each HOSTNAME_OR_IP becomes a subjectAltName entry: IPv4/IPv6 addresses as
IP:, anything else as DNS:.  The first DNS name is also the subject CN.
Without arguments: \$(hostname), \$(hostname).local, localhost, the addresses
from 'hostname -I' (when available), 127.0.0.1 and ::1.

Options:
  --out DIR        output directory (default: $script_dir)
  --days N         validity of server/client certificates in days (default 825)
  --ca-days N      validity of a newly created CA in days (default 3650)
  --ca-name NAME   CN of a newly created CA (default "thermalert CA")
  --reuse-ca       keep an existing DIR/ca.crt + DIR/ca.key, issue only the
                   server (and client) certificates; a new CA is made if none
                   exists
  --force          replace an existing CA (all old certificates become useless)
  --client NAME    also issue DIR/NAME.crt + DIR/NAME.key (CN=NAME,
                   extendedKeyUsage clientAuth); may be repeated
  --expired        issue the server certificate already expired
                   (valid 2020-01-01 to 2020-01-02; for tests)
  -h, --help       show this help

Exit status: 0 ok, 1 failure or refusal, 2 usage error.
EOF
}

die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: %s\n' "$prog" "$*" >&2
    printf "Try '%s --help'.\n" "$prog" >&2
    exit 2
}

note() {
    printf '%s: %s\n' "$prog" "$*" >&2
}

is_uint() {
    [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 >= 1))
}

is_ipv4() {
    local ip=$1 octet
    [[ $ip =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || return 1
    local IFS=.
    for octet in $ip; do
        ((10#$octet <= 255)) || return 1
    done
}

is_ipv6() {
    local ip=$1 rest groups
    [[ $ip == *:* ]] || return 1
    [[ $ip =~ ^[0-9A-Fa-f:.]+$ ]] || return 1
    # An embedded IPv4 address is only allowed as the last part.
    if [[ $ip == *.* ]]; then
        is_ipv4 "${ip##*:}" || return 1
        ip="${ip%:*}:0:0"
    fi
    # At most one "::", no ":::".
    rest=${ip#*::}
    [[ $rest == *::* ]] && return 1
    [[ $ip == *:::* ]] && return 1
    [[ $ip =~ ^[0-9A-Fa-f:]+$ ]] || return 1
    [[ $ip =~ (^|:)[0-9A-Fa-f]{5,} ]] && return 1
    # A single leading/trailing colon is only valid as part of "::".
    [[ $ip == :* && $ip != ::* ]] && return 1
    [[ $ip == *: && $ip != *:: ]] && return 1
    groups=$(tr -cd ':' <<<"$ip")
    groups=${#groups}
    if [[ $ip == *::* ]]; then
        ((groups <= 7))
    else
        ((groups == 7))
    fi
}

is_dns_name() {
    local n=$1
    ((${#n} <= 253)) || return 1
    # All digits and dots is a mistyped IPv4 address, not a host name.
    [[ $n =~ ^[0-9.]+$ ]] && return 1
    # Letters, digits, '-', '_' and dots; an optional leading "*." wildcard.
    [[ $n =~ ^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$ ]]
}

# Escape a value for "openssl req -subj" (/ + = and \ are special).
subj_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\//\\/}
    s=${s//+/\\+}
    s=${s//=/\\=}
    printf '%s' "$s"
}

# A random, positive, non-zero serial number: 32 hex digits (an even count,
# as 'openssl ca' serial files need), the first one 4 so it is positive.
new_serial() {
    local r
    r=$(openssl rand -hex 16)
    printf '0x4%s' "${r:1}"
}

new_key() { # path
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$1" 2>/dev/null ||
        die "cannot generate a key in $1"
    chmod 600 "$1"
}

pubkey_of_cert() { openssl x509 -in "$1" -noout -pubkey; }
pubkey_of_key() { openssl pkey -in "$1" -pubout; }

# ----------------------------------------------------------------- arguments
out_dir=$script_dir
days=825
ca_days=3650
ca_name="thermalert CA"
ca_name_given=false
reuse_ca=false
force=false
expired=false
clients=()
sans=()

need_arg() {
    (($2 >= 2)) || usage_error "option $1 needs an argument"
}

while (($# > 0)); do
    case $1 in
    --out)
        need_arg "$1" $#
        out_dir=$2
        shift 2
        ;;
    --out=*)
        out_dir=${1#*=}
        shift
        ;;
    --days)
        need_arg "$1" $#
        days=$2
        shift 2
        ;;
    --days=*)
        days=${1#*=}
        shift
        ;;
    --ca-days)
        need_arg "$1" $#
        ca_days=$2
        shift 2
        ;;
    --ca-days=*)
        ca_days=${1#*=}
        shift
        ;;
    --ca-name)
        need_arg "$1" $#
        ca_name=$2
        ca_name_given=true
        shift 2
        ;;
    --ca-name=*)
        ca_name=${1#*=}
        ca_name_given=true
        shift
        ;;
    --client)
        need_arg "$1" $#
        clients+=("$2")
        shift 2
        ;;
    --client=*)
        clients+=("${1#*=}")
        shift
        ;;
    --reuse-ca)
        reuse_ca=true
        shift
        ;;
    --force)
        force=true
        shift
        ;;
    --expired)
        expired=true
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        sans+=("$@")
        break
        ;;
    -*)
        usage_error "unknown option: $1"
        ;;
    *)
        sans+=("$1")
        shift
        ;;
    esac
done

[[ -n $out_dir ]] || usage_error "--out needs a directory"
is_uint "$days" || usage_error "--days must be a positive integer, not '$days'"
is_uint "$ca_days" || usage_error "--ca-days must be a positive integer, not '$ca_days'"
[[ -n $ca_name && $ca_name != *$'\n'* ]] || usage_error "--ca-name must be a non-empty single line"
((${#ca_name} <= 64)) || usage_error "--ca-name must be at most 64 characters"

if ((${#clients[@]} > 0)); then
    for c in "${clients[@]}"; do
        [[ $c =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] ||
            usage_error "--client name '$c' may only use letters, digits, '.', '-' and '_'"
        ((${#c} <= 64)) || usage_error "--client name '$c' is longer than 64 characters"
        case $c in
        ca | server) usage_error "--client name '$c' would overwrite $c.crt/$c.key" ;;
        esac
    done
fi

command -v openssl >/dev/null 2>&1 || die "openssl is not installed"

# -------------------------------------------------------- subjectAltNames
if ((${#sans[@]} == 0)); then
    host=$(uname -n 2>/dev/null || true)
    host=${host%%.*}
    if [[ -n $host && $host != localhost ]] && is_dns_name "$host"; then
        sans+=("$host")
        sans+=("$host.local")
    fi
    sans+=(localhost)
    if command -v hostname >/dev/null 2>&1; then
        # 'hostname -I' (Debian's hostname package) lists the host's
        # addresses except loopback and IPv6 link-local ones.
        read -r -a host_ips <<<"$(hostname -I 2>/dev/null || true)"
        if ((${#host_ips[@]} > 0)); then
            sans+=("${host_ips[@]}")
        fi
    fi
    sans+=(127.0.0.1 ::1)
fi

dns_names=()
ip_addrs=()
for s in "${sans[@]}"; do
    # Tolerate [v6] as written in URLs.
    if [[ $s == \[*\] ]]; then
        s=${s#[}
        s=${s%]}
    fi
    if is_ipv4 "$s" || is_ipv6 "$s"; then
        dup=false
        if ((${#ip_addrs[@]} > 0)); then
            for x in "${ip_addrs[@]}"; do
                [[ ${x,,} == "${s,,}" ]] && dup=true
            done
        fi
        $dup || ip_addrs+=("$s")
    elif is_dns_name "$s"; then
        s=${s%.}
        dup=false
        if ((${#dns_names[@]} > 0)); then
            for x in "${dns_names[@]}"; do
                [[ ${x,,} == "${s,,}" ]] && dup=true
            done
        fi
        $dup || dns_names+=("$s")
    else
        usage_error "'$s' is neither an IP address nor a valid DNS name"
    fi
done

if ((${#dns_names[@]} > 0)); then
    server_cn=${dns_names[0]}
else
    server_cn=${ip_addrs[0]}
fi

# ------------------------------------------------------------- directories
mkdir -p -- "$out_dir" || die "cannot create $out_dir"
out_dir=$(cd -- "$out_dir" && pwd -P)
[[ -w $out_dir ]] || die "$out_dir is not writable"

ca_crt=$out_dir/ca.crt
ca_key=$out_dir/ca.key

# Keys are created private from the start.
umask 077
work=$(mktemp -d "$out_dir/.make-certs.XXXXXX")
cleanup() { rm -rf -- "$work"; }
trap cleanup EXIT

make_ca=true
if $reuse_ca; then
    if [[ -f $ca_crt && -f $ca_key ]]; then
        make_ca=false
        [[ $(pubkey_of_cert "$ca_crt") == "$(pubkey_of_key "$ca_key")" ]] ||
            die "$ca_key does not belong to $ca_crt"
        if $ca_name_given; then
            note "--reuse-ca: keeping the existing CA; --ca-name is ignored"
        fi
    elif [[ -f $ca_crt ]]; then
        die "--reuse-ca: $ca_crt exists but $ca_key is missing, cannot sign with it"
    fi
elif [[ -e $ca_crt ]] && ! $force; then
    die "$ca_crt already exists. Use --reuse-ca to keep this CA and only issue a new server certificate, or --force to replace the CA (every client must then get the new ca.crt)."
fi

# ------------------------------------------------------------ openssl config
# A private config, so that the system openssl.cnf cannot add or change
# anything.
cnf=$work/openssl.cnf
{
    cat <<'EOF'
[req]
distinguished_name = req_dn
prompt             = no
string_mask        = utf8only
utf8               = yes

[req_dn]
CN = unused

[v3_ca]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[server_ext]
basicConstraints       = critical, CA:FALSE
# EC keys cannot encipher, so keyEncipherment (an RSA key-transport flag) is
# not set: RFC 5480 forbids it for EC keys; TLS with ECDHE needs only
# digitalSignature.
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = @server_alt_names
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[client_ext]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[server_alt_names]
EOF
    i=0
    if ((${#dns_names[@]} > 0)); then
        for n in "${dns_names[@]}"; do
            i=$((i + 1))
            printf 'DNS.%d = %s\n' "$i" "$n"
        done
    fi
    i=0
    if ((${#ip_addrs[@]} > 0)); then
        for a in "${ip_addrs[@]}"; do
            i=$((i + 1))
            printf 'IP.%d = %s\n' "$i" "$a"
        done
    fi
} >"$cnf"

# --------------------------------------------------------------------- CA
if $make_ca; then
    new_key "$work/ca.key"
    openssl req -new -x509 -config "$cnf" -extensions v3_ca \
        -key "$work/ca.key" -sha256 -days "$ca_days" \
        -set_serial "$(new_serial)" \
        -subj "/CN=$(subj_escape "$ca_name")" \
        -out "$work/ca.crt" 2>"$work/err" ||
        die "creating the CA failed: $(cat "$work/err")"
    signing_ca_crt=$work/ca.crt
    signing_ca_key=$work/ca.key
else
    signing_ca_crt=$ca_crt
    signing_ca_key=$ca_key
fi

# ------------------------------------------------------------ leaf helper
# issue NAME CN EXT_SECTION [expired]
issue() {
    local name=$1 cn=$2 ext=$3 mode=${4:-}
    new_key "$work/$name.key"
    openssl req -new -config "$cnf" -key "$work/$name.key" -sha256 \
        -subj "/CN=$(subj_escape "$cn")" -out "$work/$name.csr" 2>"$work/err" ||
        die "creating the request for $name failed: $(cat "$work/err")"

    if [[ $mode != expired ]]; then
        openssl x509 -req -in "$work/$name.csr" \
            -CA "$signing_ca_crt" -CAkey "$signing_ca_key" \
            -set_serial "$(new_serial)" -days "$days" -sha256 \
            -extfile "$cnf" -extensions "$ext" \
            -out "$work/$name.crt" 2>"$work/err" ||
            die "signing $name failed: $(cat "$work/err")"
    elif openssl x509 -help 2>&1 | grep -q -e '-not_before'; then
        # OpenSSL >= 3.4 can set explicit dates.
        openssl x509 -req -in "$work/$name.csr" \
            -CA "$signing_ca_crt" -CAkey "$signing_ca_key" \
            -set_serial "$(new_serial)" -sha256 \
            -not_before 20200101000000Z -not_after 20200102000000Z \
            -extfile "$cnf" -extensions "$ext" \
            -out "$work/$name.crt" 2>"$work/err" ||
            die "signing $name failed: $(cat "$work/err")"
    else
        # OpenSSL 3.0 (Debian 12): 'openssl ca' with a throw-away database.
        local db=$work/cadb
        mkdir -p "$db/new"
        : >"$db/index.txt"
        new_serial | sed 's/^0x//' >"$db/serial"
        cat >"$db/ca.cnf" <<EOF
[ca]
default_ca = tmp_ca

[tmp_ca]
database        = $db/index.txt
new_certs_dir   = $db/new
serial          = $db/serial
default_md      = sha256
policy          = tmp_policy
unique_subject  = no
copy_extensions = none
email_in_dn     = no

[tmp_policy]
commonName = supplied
EOF
        openssl ca -batch -notext -config "$db/ca.cnf" \
            -cert "$signing_ca_crt" -keyfile "$signing_ca_key" \
            -extfile "$cnf" -extensions "$ext" \
            -startdate 20200101000000Z -enddate 20200102000000Z \
            -in "$work/$name.csr" -out "$work/$name.crt" >"$work/err" 2>&1 ||
            die "signing $name failed: $(cat "$work/err")"
    fi
    rm -f -- "$work/$name.csr"
}

if $expired; then
    issue server "$server_cn" server_ext expired
else
    issue server "$server_cn" server_ext
fi

if ((${#clients[@]} > 0)); then
    for c in "${clients[@]}"; do
        issue "client-$c" "$c" client_ext
    done
fi

# ------------------------------------------------------------------ verify
verify() { # cert purpose [extra args]
    local cert=$1 purpose=$2
    shift 2
    openssl verify -x509_strict -purpose "$purpose" "$@" \
        -CAfile "$signing_ca_crt" "$cert" >"$work/err" 2>&1 ||
        die "verification of ${cert##*/} failed: $(cat "$work/err")"
}
if $expired; then
    verify "$work/server.crt" sslserver -no_check_time
else
    verify "$work/server.crt" sslserver
fi
if ((${#clients[@]} > 0)); then
    for c in "${clients[@]}"; do
        verify "$work/client-$c.crt" sslclient
    done
fi

# ------------------------------------------------------------------ install
# Certificates are public (644), keys stay 600.  mv within one directory is
# atomic, so a running broker never sees a half-written file.
install_pair() { # from-name to-name
    chmod 644 "$work/$1.crt"
    chmod 600 "$work/$1.key"
    mv -f -- "$work/$1.key" "$out_dir/$2.key"
    mv -f -- "$work/$1.crt" "$out_dir/$2.crt"
}
if $make_ca; then
    install_pair ca ca
fi
install_pair server server
if ((${#clients[@]} > 0)); then
    for c in "${clients[@]}"; do
        install_pair "client-$c" "$c"
    done
fi

# ------------------------------------------------------------------ summary
field() { # cert option
    openssl x509 -in "$1" -noout "${@:2}" | sed 's/^[^=]*=//'
}
{
    if $make_ca; then
        printf 'CA (new):      %s\n' "$ca_crt"
    else
        printf 'CA (kept):     %s\n' "$ca_crt"
    fi
    printf '  subject:     %s\n' "$(openssl x509 -in "$ca_crt" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')"
    printf '  expires:     %s\n' "$(field "$ca_crt" -enddate)"
    printf '  sha256:      %s\n' "$(field "$ca_crt" -fingerprint -sha256)"
    printf 'server:        %s\n' "$out_dir/server.crt"
    printf '  subject:     CN=%s\n' "$server_cn"
    printf '  SANs:        %s\n' "$(openssl x509 -in "$out_dir/server.crt" -noout -ext subjectAltName | sed -n '2,$p' | sed 's/^ *//' | sed 's/IP Address:/IP:/g')"
    if $expired; then
        printf '  expires:     %s (EXPIRED on purpose, --expired)\n' "$(field "$out_dir/server.crt" -enddate)"
    else
        printf '  expires:     %s\n' "$(field "$out_dir/server.crt" -enddate)"
    fi
    if ((${#clients[@]} > 0)); then
        for c in "${clients[@]}"; do
            printf 'client:        %s (CN=%s, expires %s)\n' "$out_dir/$c.crt" "$c" "$(field "$out_dir/$c.crt" -enddate)"
        done
    fi
    if $expired; then
        printf 'openssl verify: OK apart from the expiry (-no_check_time)\n'
    else
        printf 'openssl verify: OK\n'
    fi
    printf 'Keep ca.key private; clients only need ca.crt.\n'
} >&2

# changecast image: a static binary on a small Debian base. The embedded
# PostgreSQL is not included; point CHANGECAST_DATABASE_URL at a server with
# wal_level=logical (docker-compose.yml does).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/changecast ./cmd/changecast

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/changecast --create-home changecast
COPY --from=build /out/changecast /usr/local/bin/changecast
USER changecast
ENV CHANGECAST_LISTEN=0.0.0.0:8080 \
    CHANGECAST_DATA_DIR=/var/lib/changecast
EXPOSE 8080
VOLUME /var/lib/changecast
ENTRYPOINT ["changecast"]
CMD ["serve"]

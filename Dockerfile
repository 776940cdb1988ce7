# A small static image: build with the Go toolchain, run as non-root on
# distroless. No cgo (the embedded SQLite store is pure Go).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/nvent ./cmd/app

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/nvent /nvent
WORKDIR /home/nonroot
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/nvent"]
CMD ["serve"]

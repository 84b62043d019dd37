package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotUTF8 is why a connection to a database whose server_encoding is
// not UTF8 fails. In SQL_ASCII the server stores the bytes it is sent
// without checking them and counts a CJK character as three (a valid
// 100-character name breaks the 256-character CHECK); in LATIN1 and the
// like it cannot store most of Unicode at all.
var ErrNotUTF8 = errors.New("the database does not store text as UTF-8")

// ConfigureConn sets what every connection to the database needs, the
// service's and the migration's alike, on cfg as parsed from DATABASE_URL:
//   - connect_timeout DefaultConnectTimeout, where the URL sets none;
//   - client_encoding UTF8, always: pgx sends and reads UTF-8 but does not
//     say so, and without it the server assumes the database's encoding,
//     or whatever ALTER ROLE or ALTER DATABASE set, and mangles the text;
//   - a refusal (ErrNotUTF8) of a database whose server_encoding is not
//     UTF8, read from what the server reports at start-up, so it costs no
//     round trip. The connection fails like an unreachable database.
func ConfigureConn(cfg *pgx.ConnConfig) {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	cfg.RuntimeParams["client_encoding"] = "UTF8"
	database, validate := cfg.Database, cfg.ValidateConnect // target_session_attrs sets one
	cfg.ValidateConnect = func(ctx context.Context, conn *pgconn.PgConn) error {
		if enc := conn.ParameterStatus("server_encoding"); enc != "UTF8" {
			return fmt.Errorf("%w: database %q has server_encoding %s; the service needs one created with ENCODING 'UTF8'",
				ErrNotUTF8, database, enc)
		}
		if validate != nil {
			return validate(ctx, conn)
		}
		return nil
	}
}

/** Deterministic sample data with realistic sensitive values (valid Luhn card numbers, E.164 phones, SSNs). */
const FIRST = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Margaret', 'Dennis', 'Radia', 'Linus', 'Katherine', 'John', 'Hedy', 'Tim'];
const LAST = ['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson', 'Hamilton', 'Ritchie', 'Perlman', 'Torvalds', 'Johnson', 'Backus', 'Lamarr', 'Berners-Lee'];

function luhnComplete(prefix: string): string {
  let sum = 0;
  const digits = prefix + '0';
  for (let i = 0; i < digits.length; i++) {
    let d = Number(digits[digits.length - 1 - i]);
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return prefix + String((10 - (sum % 10)) % 10);
}

export function seedSql(customers = 200): string {
  let seed = 42;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const digits = (n: number) => Array.from({ length: n }, () => Math.floor(rnd() * 10)).join('');
  const rows: string[] = [];
  for (let i = 1; i <= customers; i++) {
    const first = FIRST[i % FIRST.length]!;
    const last = LAST[Math.floor(i / FIRST.length) % LAST.length]!;
    const email = `${first}.${last}${i}@example.com`.toLowerCase();
    const phone = `+1${2 + Math.floor(rnd() * 8)}${digits(9)}`;
    const card = luhnComplete(`4${digits(14)}`);
    const ssn = `${100 + Math.floor(rnd() * 600)}-${10 + Math.floor(rnd() * 89)}-${1000 + Math.floor(rnd() * 8999)}`;
    rows.push(`('${first} ${last}', '${email}', '${phone}', '${card}', '${ssn}', '${['gold', 'silver', 'bronze'][i % 3]}')`);
  }
  const orders: string[] = [];
  for (let i = 1; i <= customers * 3; i++) {
    orders.push(`(${1 + Math.floor(rnd() * customers)}, ${(rnd() * 500 + 5).toFixed(2)}, '${['paid', 'shipped', 'refunded'][Math.floor(rnd() * 3)]}')`);
  }
  return `
CREATE TABLE customers (
  id serial PRIMARY KEY,
  full_name text NOT NULL,
  email text NOT NULL UNIQUE,
  phone text,
  card_number text,
  ssn text,
  tier text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id serial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id),
  amount numeric(10,2) NOT NULL,
  status text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (full_name, email, phone, card_number, ssn, tier) VALUES
${rows.join(',\n')};
INSERT INTO orders (customer_id, amount, status) VALUES
${orders.join(',\n')};
`;
}

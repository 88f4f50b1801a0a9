// "host:port" strings from the config, split for net.listen and net.connect.

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(address: string): HostPort {
  const cut = address.lastIndexOf(':');
  let host = address.slice(0, cut);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number(address.slice(cut + 1)) };
}

export async function topCommand(_argv: string[]): Promise<number> { return 0; }

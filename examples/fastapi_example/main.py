import asyncio

from fastapi import FastAPI
from time import sleep

app = FastAPI()

# Endpoint síncrono (executado no ThreadPool)
@app.get("/produtos")
def listar_produtos():
    sleep(1)  # Simulando operação bloqueante
    return {"produtos": ["Produto 1", "Produto 2"]}


# Not in the seed: the seed awaits processar_algo() without defining it, so this is the
# smallest stand-in that keeps /usuarios a real coroutine yielding to the event loop.
async def processar_algo():
    await asyncio.sleep(0)


# Endpoint assíncrono (executado no Event Loop)
@app.get("/usuarios")
async def listar_usuarios():
    await processar_algo()
    return {"usuarios": ["Usuário 1", "Usuário 2"]}
